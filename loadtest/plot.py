"""The load test's PNG: calls served per worker (a panel per transport) and
echo throughput against payload size (a line per transport). Needs matplotlib
(the ``load`` extra)."""

from __future__ import annotations

from .report import format_size
from .results import Report


def plot(reports: list[Report], path: str) -> None:
    """Calls served per worker (one panel per transport) and throughput
    against payload size (one line per transport), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(reports)
    figure = plt.figure(figsize=(13, 2 + 3.5 * rows), layout="constrained")
    grid = figure.add_gridspec(rows, 2, width_ratios=(3, 2))
    for row, report in enumerate(reports):
        plot_served(figure.add_subplot(grid[row, 0]), report)
    plot_throughput(figure.add_subplot(grid[:, 1]), reports)
    figure.suptitle(f"mysticchallenge load test, {reports[0].workers} workers")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_served(axes, report: Report) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.set_title(f"{report.transport}: calls served per worker (stacked by factor)")
    axes.set_xlabel("worker (index in GetWorkers)")
    axes.set_ylabel("calls")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    if not report.parallel:
        axes.text(0.5, 0.5, "parallel section skipped", ha="center", transform=axes.transAxes)
        return
    slots = max(len(run.served) for run in report.parallel)
    bottom = [0] * slots
    for run in report.parallel:
        heights = run.served + [0] * (slots - len(run.served))
        axes.bar(range(slots), heights, bottom=bottom, width=0.9, label=f"factor {run.factor}")
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    share = sum(run.factor for run in report.parallel)
    axes.axhline(share, color="black", linestyle="--", linewidth=1, label=f"fair share ({share})")
    axes.set_xlim(-0.5, slots - 0.5)
    axes.set_ylim(0, max(max(bottom), share) * 1.25)
    axes.legend(loc="upper center", ncols=len(report.parallel) + 1, fontsize="small")


def plot_throughput(axes, reports: list[Report]) -> None:
    axes.set_title("echo throughput against payload size")
    axes.set_xlabel("payload size")
    axes.set_ylabel("MB/s (payload, each way)")
    if not any(report.payload for report in reports):
        axes.text(0.5, 0.5, "payload section skipped", ha="center", transform=axes.transAxes)
        return
    for report in reports:
        sizes = [run.size for run in report.payload]
        rates = [run.megabytes_per_second for run in report.payload]
        axes.plot(sizes, rates, marker="o", label=report.transport)
    sizes = sorted({run.size for report in reports for run in report.payload})
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(sizes, [format_size(size) for size in sizes])
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
