"""Small calls: the figures of the native client's issue, for checkouts
against each other and against a local ``ProcessPoolExecutor(4)``, blocks
interleaved in one run (``harness.py``), 4 workers:

- a no-op ``.run()``, ``--calls`` sequential calls: p50 and p99;
- ``--burst`` no-op ``async_run`` at once: calls per second (the pool: that
  many ``submit`` and their results), and how many times the loop woke up
  to take finished calls (a client with a completion queue);
- ``--map`` no-ops through ``map``: calls per second;
- ``import distribute_challenge`` in a fresh process: milliseconds;
- a 64 MiB echo: median of 3.

    .venv/bin/python benches/python/small_calls.py --version before=/tmp/before \\
        --version after=. --transport shm --transport pipe
    .venv/bin/python benches/python/small_calls.py --version "one=. --runtime-threads 1" \\
        --version "two=. --runtime-threads 2"   # one checkout, two sets of gateway flags

A version is ``NAME=CHECKOUT``, and gateway flags after the checkout if any.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import harness


def noop(_=None):
    return None


def echo(value):
    return value


def block(checkout: str, transport: str, args: argparse.Namespace) -> dict:
    from distribute_challenge import compute_this

    binary = harness.binary_of(harness.checkout_of(checkout))
    with harness.gateway(binary, transport, *args.gateway_flag) as (url, _):
        remote = compute_this(server=url)
        for _ in range(200):
            remote(noop)().run()
        latencies = []
        for _ in range(args.calls):
            start = time.perf_counter()
            remote(noop)().run()
            latencies.append(time.perf_counter() - start)

        async def burst() -> float:
            await asyncio.gather(*(remote(noop)().async_run() for _ in range(200)))
            if wakeups is not None:
                wakeups.clear()
            start = time.perf_counter()
            await asyncio.gather(*(remote(noop)().async_run() for _ in range(args.burst)))
            return args.burst / (time.perf_counter() - start)

        wakeups = _count_wakeups()
        burst_rate = asyncio.run(burst())
        list(remote(noop).map(range(500)))
        start = time.perf_counter()
        list(remote(noop).map(range(args.map)))
        map_rate = args.map / (time.perf_counter() - start)
        blob = os.urandom(64 << 20)
        remote(echo)(blob).run()
        echoes = []
        for _ in range(3):
            start = time.perf_counter()
            remote(echo)(blob).run()
            echoes.append(time.perf_counter() - start)
    return {
        "latencies": latencies,
        "burst": burst_rate,
        "map": map_rate,
        "echo_64m": statistics.median(echoes),
        "import_ms": _import_ms(),
        "wakeups": len(wakeups) if wakeups is not None else None,
    }


def _count_wakeups() -> list | None:
    """Counts the loop's wake-ups for finished calls (each drain of the
    completion queue), in a client that has one; None otherwise."""
    from distribute_challenge import _client

    loop_calls = getattr(_client, "_LoopCalls", None)
    if loop_calls is None:
        return None
    wakeups: list = []
    drain = loop_calls._drain

    def counted(self) -> None:
        wakeups.append(None)
        drain(self)

    loop_calls._drain = counted
    return wakeups


def _import_ms() -> float:
    code = "import time; t = time.perf_counter(); import distribute_challenge; "
    code += "print((time.perf_counter() - t) * 1e3)"
    runs = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
        for _ in range(3)
    ]
    return statistics.median(runs)


def pool_block(args: argparse.Namespace) -> dict:
    with ProcessPoolExecutor(4) as pool:
        list(pool.map(noop, range(1000)))
        latencies = []
        for _ in range(args.calls):
            start = time.perf_counter()
            pool.submit(noop).result()
            latencies.append(time.perf_counter() - start)
        start = time.perf_counter()
        for future in [pool.submit(noop) for _ in range(args.burst)]:
            future.result()
        burst_rate = args.burst / (time.perf_counter() - start)
        start = time.perf_counter()
        for future in [pool.submit(noop) for _ in range(args.map)]:
            future.result()
        map_rate = args.map / (time.perf_counter() - start)
    return {"latencies": latencies, "burst": burst_rate, "map": map_rate}


def report(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    pool = results["ProcessPoolExecutor(4)"]
    pool_p50 = harness.percentile([v for run in pool for v in run["latencies"]], 50)
    pool_burst, pool_map = harness.median_of(pool, "burst"), harness.median_of(pool, "map")
    print(f"command: {' '.join(sys.argv)}\n")
    print(
        f"| set-up | no-op p50 | p99 | p50 / pool's | {args.burst:,} async_run at once "
        f"| / pool's submits | loop wake-ups | {args.map:,} via map | / pool's submits "
        "| import | 64 MiB echo |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        latencies = [value for run in runs for value in run["latencies"]]
        p50 = harness.percentile(latencies, 50)
        p99 = harness.percentile(latencies, 99)
        burst, rate = harness.median_of(runs, "burst"), harness.median_of(runs, "map")
        woke = [run.get("wakeups") for run in runs]
        wakeups = f"{statistics.median(woke):,.0f}" if None not in woke else "-"
        extra = ["-", "-"]
        if "import_ms" in runs[0]:
            extra = [
                f"{harness.median_of(runs, 'import_ms'):.0f} ms",
                f"{harness.median_of(runs, 'echo_64m') * 1e3:.0f} ms",
            ]
        cells = [
            f"{p50 * 1e6:,.0f} µs",
            f"{p99 * 1e6:,.0f} µs",
            harness.ratio(p50, pool_p50),
            f"{burst:,.0f}/s",
            harness.ratio(burst, pool_burst),
            wakeups,
            f"{rate:,.0f}/s",
            harness.ratio(rate, pool_map),
            *extra,
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--version", action="append", default=[], help="NAME=CHECKOUT [GATEWAY FLAGS...]"
    )
    parser.add_argument("--transport", action="append", choices=["pipe", "shm"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--burst", type=int, default=5000)
    parser.add_argument("--map", type=int, default=20_000)
    parser.add_argument(
        "--block", nargs=2, metavar=("CHECKOUT", "TRANSPORT"), help=argparse.SUPPRESS
    )
    parser.add_argument("--gateway-flag", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.block:
        print(json.dumps(block(*args.block, args)))
        return
    versions = [entry.split("=", 1) for entry in args.version]
    if not versions or any(len(entry) != 2 for entry in versions):
        parser.error("give --version NAME=CHECKOUT at least once")
    counts = ["--calls", str(args.calls), "--burst", str(args.burst), "--map", str(args.map)]
    blocks = {}
    for name, spec in versions:
        path, *flags = spec.split()
        extra = [*counts, *(f"--gateway-flag={flag}" for flag in flags)]
        for transport in args.transport or ["shm"]:
            blocks[f"{name} {transport}"] = lambda path=path, transport=transport, extra=extra: (
                harness.run_block(__file__, harness.checkout_of(path), [transport, *extra])
            )
    blocks["ProcessPoolExecutor(4)"] = lambda: pool_block(args)
    report(harness.interleave(args.rounds, blocks), args)


if __name__ == "__main__":
    main()
