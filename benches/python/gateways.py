"""Several gateways against one: the original load test's parallel section
(``test_load.py``'s ``measure_parallel``) on each layout, on the same random
sleeps, interleaved round by round; then the spread of no-op calls. Each
measurement runs on a fresh event loop, so a fresh channel: first a few
no-op calls connect it to every gateway (``--cold`` skips them).

    cargo build --release
    .venv/bin/python benches/python/gateways.py   # 1x21 against 3x7, 3 rounds
    .venv/bin/python benches/python/gateways.py --rounds 5 \
        --layouts '1x21,3x7,3x7 --queue-capacity 1'
    .venv/bin/python benches/python/gateways.py --gateway /path/to/mysticchallenge --noop-calls 2100

A layout is ``GATEWAYSxWORKERS`` with optional gateway flags after a space.
Every layout's gateways run for the whole benchmark (idle workers cost no
CPU); a layout is one client target, the list of its gateways' addresses, so
gRPC's ``round_robin`` spreads its calls. Each round draws new sleeps per
factor and runs every layout on them, in an order that alternates between
rounds (this machine is noisy: compare within a round, report medians).

Printed per layout and factor: the median efficiency against the ideal FIFO
makespan of the whole pool (``test_load.py``'s figure) and its ratio to the
first layout's; the largest gateway share of calls over its share of
workers. Then, per multi-gateway layout, ``--noop-calls`` no-op calls all at
once and the largest gateway's count over its fair share.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys

from _servers import GATEWAY, serving

from distribute_challenge import compute_this
from test_load import measure_parallel


def noop():
    return None


def parse_layout(text: str) -> tuple[str, int, int, list[str]]:
    shape, *flags = text.split()
    gateways, _, workers = shape.partition("x")
    if not (gateways.isdigit() and workers.isdigit()) or min(int(gateways), int(workers)) < 1:
        raise argparse.ArgumentTypeError(f"not a layout: {text!r} (e.g. 3x7 or '3x7 --flag V')")
    return text.strip(), int(gateways), int(workers), flags


@contextlib.contextmanager
def layout_running(binary, gateways: int, workers: int, flags: list[str], transport: str):
    """Starts the layout's gateways; yields the comma-separated list of their URLs."""
    with contextlib.ExitStack() as stack:
        urls = []
        for _ in range(gateways):
            command = [str(binary), "--listen", "127.0.0.1:0", "--transport", transport]
            command += ["--workers", str(workers), "--python", sys.executable, *flags]
            urls.append(stack.enter_context(serving(command)))
        yield ",".join(urls)


async def warm_then_measure(server: str, factor: int, sleeps: list[float], cold: bool):
    """``measure_parallel`` on this loop's channel, once every gateway's
    connection is up (unless ``cold``: the burst then meets a channel that
    connects as the calls arrive, and round_robin has only the gateways
    already connected to pick from)."""
    if not cold:
        remote = compute_this(server=server)(noop)
        for _ in range(10):
            await remote().async_run()
        await asyncio.sleep(0.05)
    return await measure_parallel(server, factor, sleeps, "")


async def noop_spread(server: str, calls: int, cold: bool) -> list[int]:
    """Calls served by each gateway of ``server`` during ``calls`` no-ops at
    once (on a channel that connects as they start, if ``cold``)."""
    remote = compute_this(server=server)(noop)

    def served():
        return [sum(w.calls_served for w in a.info.workers) for a in remote.get_gateways()]

    for _ in range(0 if cold else 10):  # connect every gateway of this loop's channel
        await remote().async_run()
    before = served()
    await asyncio.gather(*(remote().async_run() for _ in range(calls)))
    return [after - first for after, first in zip(served(), before, strict=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--layouts",
        type=lambda text: [parse_layout(item) for item in text.split(",")],
        default=[parse_layout("1x21"), parse_layout("3x7")],
    )
    parser.add_argument("--factors", default="1,2,5,10")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-sleep", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--noop-calls", type=int, default=2100)
    parser.add_argument("--transport", default="shm")
    parser.add_argument(
        "--cold", action="store_true", help="no warm-up: each burst opens its channel"
    )
    parser.add_argument("--gateway", default=str(GATEWAY), help="the gateway binary")
    options = parser.parse_args()
    factors = [int(factor) for factor in options.factors.split(",")]
    pools = {workers * gateways for _, gateways, workers, _ in options.layouts}
    if len(pools) != 1:
        parser.error("every layout must have the same number of workers in all")
    (pool,) = pools

    efficiency: dict[tuple[str, int], list[float]] = {}
    skew: dict[tuple[str, int], list[float]] = {}
    with contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(
                layout_running(options.gateway, gateways, workers, flags, options.transport)
            )
            for name, gateways, workers, flags in options.layouts
        }
        rng = random.Random(options.seed)
        for round_number in range(options.rounds):
            order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
            for factor in factors:
                sleeps = [rng.random() * options.max_sleep for _ in range(pool * factor)]
                for name in order:
                    run = asyncio.run(
                        warm_then_measure(servers[name], factor, sleeps, options.cold)
                    )
                    efficiency.setdefault((name, factor), []).append(run.fifo_efficiency)
                    skew.setdefault((name, factor), []).append(
                        max((s.calls / run.calls) / (s.workers / run.workers) for s in run.shares)
                    )
                    print(
                        f"round {round_number + 1} factor {factor:>2} {name:<28}"
                        f" efficiency {run.fifo_efficiency:6.2f}%"
                        f" calls per gateway {[s.calls for s in run.shares]}",
                        flush=True,
                    )
        first = options.layouts[0][0]
        print(f"\nmedians over {options.rounds} rounds ({pool} workers in every layout)")
        print(f"{'layout':<28} {'factor':>6} {'efficiency':>11} {'vs ' + first:>14} {'skew':>6}")
        for name, *_ in options.layouts:
            for factor in factors:
                median = statistics.median(efficiency[(name, factor)])
                ratio = median / statistics.median(efficiency[(first, factor)])
                print(
                    f"{name:<28} {factor:>6} {median:>10.2f}% {ratio:>14.3f}"
                    f" {statistics.median(skew[(name, factor)]):>6.2f}"
                )
        for name, gateways, _, _ in options.layouts:
            if gateways > 1 and options.noop_calls:
                served = asyncio.run(noop_spread(servers[name], options.noop_calls, options.cold))
                worst = max(served) / (sum(served) / len(served))
                print(
                    f"\n{name}: {options.noop_calls} no-op calls at once, per gateway {served};"
                    f" largest / fair share {worst:.3f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
