"""The text report of a load test: the original test's lines, the payload table,
the no-op figures, and two reports side by side with ratios."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .results import MapRun, NoopRun, ParallelRun, PayloadRun, Report


def emit(lines: list[str]) -> None:
    print("\n".join(lines), flush=True)


def format_size(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"


def report_header(report: Report, seed: int) -> list[str]:
    lines = [
        f"server: {report.server}",
        f"transport: {report.transport}",
        f"pool: {report.workers} workers",
    ]
    if len(report.gateway_workers) > 1:
        each = ", ".join(str(workers) for workers in report.gateway_workers)
        lines.append(f"gateways: {len(report.gateway_workers)} ({each} workers)")
    return [*lines, f"seed: {seed}"]


def parallel_lines(run: ParallelRun) -> list[str]:
    lines = [
        "",
        f"workers: {run.workers}",
        f"calls: {run.calls}",
        f"minimal_execution_time: {run.minimal:.3f}",
        f"real_execution_time: {run.real:.3f}",
        f"effectiveness of parallelization: {run.effectiveness:.2f}%",
        f"ideal_fifo_execution_time: {run.ideal:.3f}",
        f"efficiency vs ideal FIFO: {run.fifo_efficiency:.2f}%"
        f" (real is {run.real / run.ideal:.3f}x the ideal makespan)",
    ]
    if len(run.shares) > 1:
        lines.append("calls per gateway: calls (share of calls; share of workers)")
        for share in run.shares:
            lines.append(
                f"{share.url}: {share.calls} ({share.calls / run.calls:.1%};"
                f" {share.workers / run.workers:.1%})"
            )
    # The histogram spans every gateway's workers.
    lines.append("num of calls: served by num of workers")
    return lines + [f"{calls}: {workers}" for calls, workers in run.histogram()]


def payload_lines(runs: list[PayloadRun]) -> list[str]:
    lines = ["", "payload (echo; MB/s = 10^6 payload bytes per second, each way)"]
    lines.append(f"{'size':>8} {'calls':>6} {'in flight':>9} {'calls/s':>10} {'MB/s':>9}")
    for run in runs:
        lines.append(
            f"{format_size(run.size):>8} {run.calls:>6} {run.in_flight:>9}"
            f" {run.calls_per_second:>10.1f} {run.megabytes_per_second:>9.1f}"
        )
    return lines


def noop_lines(run: NoopRun) -> list[str]:
    return [
        "",
        f"no-op latency p50: {run.p50 * 1e3:.3f} ms",
        f"no-op latency p99: {run.p99 * 1e3:.3f} ms",
        f"no-op calls/s, sequential ({len(run.latencies)} calls): {run.sequential_rate:.0f}",
        f"no-op calls/s, {run.burst_calls} at once: {run.burst_rate:.0f}",
    ]


def map_lines(run: MapRun) -> list[str]:
    lines = ["", "map (one stream per map: the factors' sleeps again, then no-ops)"]
    for factor in run.parallel:
        lines.append(
            f"factor {factor.factor}, {factor.calls} calls: real {factor.real:.3f} s,"
            f" ideal FIFO {factor.ideal:.3f} s, efficiency vs ideal FIFO"
            f" {factor.fifo_efficiency:.2f}%"
        )
    lines.append(f"map no-op calls/s ({run.noop_calls} calls): {run.noop_rate:.0f}")
    return lines


@dataclass(frozen=True)
class Metric:
    label: str
    value: Callable[[Report], float]
    higher_is_better: bool | None  # None: no ratio (the row above's holds)


def comparison_metrics(reports: list[Report]) -> list[Metric]:
    """The figures that both reports have, for the side-by-side table."""
    metrics = []
    for i, run in enumerate(reports[0].parallel):
        pick = lambda attr, i=i: lambda r: getattr(r.parallel[i], attr)  # noqa: E731
        # Both percentages are a constant over the real time: they share its ratio.
        metrics += [
            Metric(f"factor {run.factor}, {run.calls} calls: real time s", pick("real"), False),
            Metric("  effectiveness %", pick("effectiveness"), None),
            Metric("  efficiency vs ideal FIFO %", pick("fifo_efficiency"), None),
        ]
    for i, run in enumerate(reports[0].payload):
        # calls/s and MB/s have the same ratio: the one that speaks for the size.
        unit, attr = ("MB/s", "megabytes_per_second")
        if run.size < 1 << 20:
            unit, attr = ("calls/s", "calls_per_second")
        value = lambda r, i=i, attr=attr: getattr(r.payload[i], attr)  # noqa: E731
        metrics.append(Metric(f"echo {format_size(run.size)}: {unit}", value, True))
    if reports[0].noop is not None:
        metrics += [
            Metric("no-op latency p50 ms", lambda r: r.noop.p50 * 1e3, False),
            Metric("no-op latency p99 ms", lambda r: r.noop.p99 * 1e3, False),
            Metric("no-op calls/s, sequential", lambda r: r.noop.sequential_rate, True),
            Metric("no-op calls/s, all at once", lambda r: r.noop.burst_rate, True),
        ]
    if reports[0].map is not None:
        for i, run in enumerate(reports[0].map.parallel):
            pick = lambda attr, i=i: lambda r: getattr(r.map.parallel[i], attr)  # noqa: E731
            metrics += [
                Metric(f"map factor {run.factor}: real time s", pick("real"), False),
                Metric("  efficiency vs ideal FIFO %", pick("fifo_efficiency"), None),
            ]
        metrics.append(Metric("map no-op calls/s", lambda r: r.map.noop_rate, True))
    return metrics


def format_value(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def comparison_lines(reports: list[Report]) -> list[str]:
    first, last = reports[0].transport, reports[-1].transport
    metrics = comparison_metrics(reports)
    width = max(len(metric.label) for metric in metrics) + 2
    header = f"{'':<{width}}" + "".join(f"{r.transport:>12}" for r in reports)
    lines = [
        "",
        f"comparison, {reports[0].workers} workers ({last} vs {first}: how many times better"
        f" {last} is; > 1 means {last} is better)",
        header + f"{last + ' vs ' + first:>14}",
    ]
    for metric in metrics:
        values = [metric.value(report) for report in reports]
        cells = "".join(f"{format_value(value):>12}" for value in values)
        ratio = improvement(values[0], values[-1], metric.higher_is_better)
        lines.append(f"{metric.label:<{width}}{cells}{ratio:>14}".rstrip())
    return lines


def improvement(before: float, after: float, higher_is_better: bool | None) -> str:
    """How many times better ``after`` is than ``before``, as ``1.23x``."""
    if higher_is_better is None:
        return ""
    numerator, denominator = (after, before) if higher_is_better else (before, after)
    return f"{numerator / denominator:.2f}x" if denominator > 0 else "n/a"
