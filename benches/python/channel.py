"""The worker's channel, two checkouts against each other and each transport
against the other, interleaved in one run, with a local
``ProcessPoolExecutor(4)`` in the same rounds:

- 1 KiB echo, ``--calls`` sequential calls: p50 and p99;
- ``--map`` no-ops through ``map``: calls per second;
- the workers' CPU per no-op call (user + system of every process under the
  gateway, over the map), and the part of it outside the function and its
  pickling (less ``execute``'s own time for the same call, in this process);
- echo of 1 KiB to 64 MiB: median of ``--sizes-calls`` calls each.

    git worktree add /tmp/before OLD_COMMIT   # and build it: see harness.py
    .venv/bin/python benches/python/channel.py --version before=/tmp/before --version after=.

Each block runs in a fresh process of its checkout, against the checkout's
``target/release/mysticchallenge --workers 4``, rounds interleaved
(``harness.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import harness

SIZES = [1 << 10, 64 << 10, 1 << 20, 8 << 20, 64 << 20]


def noop(_=None):
    return None


def echo(value):
    return value


def _execute_seconds(calls: int) -> float:
    """What ``worker_shim``'s ``execute`` takes for one no-op call by
    digest (decode, run, encode), here, in-process."""
    from mystic_wire import attach, encode_call, encode_function
    from worker_shim import _executor

    captured = encode_function(noop)
    call = encode_call(captured.digest, (), {}, ())
    _executor.execute(memoryview(attach(captured, call)))
    start = time.process_time()
    for _ in range(calls):
        _executor.execute(memoryview(call))
    return (time.process_time() - start) / calls


def block(checkout: str, transport: str, args: argparse.Namespace) -> None:
    """One checkout's block on one transport, in this process."""
    from distribute_challenge import compute_this

    binary = harness.binary_of(harness.checkout_of(checkout))
    with harness.gateway(binary, transport) as (url, gateway):
        remote = compute_this(server=url)
        figures = _measure(remote, lambda: harness.descendants_cpu(gateway.pid), args)
    figures["execute_us"] = _execute_seconds(2000) * 1e6
    print(json.dumps(figures))


def _measure(remote, worker_cpu, args) -> dict:
    one_kib = os.urandom(1 << 10)
    for _ in range(200):
        remote(echo)(one_kib).run()
    latencies = []
    for _ in range(args.calls):
        start = time.perf_counter()
        remote(echo)(one_kib).run()
        latencies.append(time.perf_counter() - start)
    list(remote(noop).map(range(500)))
    cpu_before, start = worker_cpu(), time.perf_counter()
    list(remote(noop).map(range(args.map)))
    elapsed, cpu = time.perf_counter() - start, worker_cpu() - cpu_before
    sizes = {}
    for size in SIZES:
        blob = os.urandom(size)
        remote(echo)(blob).run()
        times = []
        for _ in range(args.sizes_calls):
            start = time.perf_counter()
            remote(echo)(blob).run()
            times.append(time.perf_counter() - start)
        sizes[size] = statistics.median(times)
    return {
        "latencies": latencies,
        "map_rate": args.map / elapsed,
        "cpu_per_call_us": cpu / args.map * 1e6,
        "sizes": sizes,
    }


def pool_block(args: argparse.Namespace) -> dict:
    """The local baseline: the same figures through ProcessPoolExecutor(4)."""
    one_kib = os.urandom(1 << 10)
    with ProcessPoolExecutor(4) as pool:
        list(pool.map(noop, range(1000)))
        latencies = []
        for _ in range(args.calls):
            start = time.perf_counter()
            pool.submit(echo, one_kib).result()
            latencies.append(time.perf_counter() - start)
        start = time.perf_counter()
        list(pool.map(noop, range(args.map), chunksize=1))
        rate = args.map / (time.perf_counter() - start)
    return {"latencies": latencies, "map_rate": rate}


def report(results: dict, args: argparse.Namespace) -> None:
    print(f"command: {' '.join(sys.argv)}\n")
    columns = f"1 KiB p50 | p99 | {args.map:,} no-ops via map | worker CPU/call | outside execute"
    print(f"| set-up | {columns} |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        latencies = [value for run in runs for value in run["latencies"]]
        rate = statistics.median(run["map_rate"] for run in runs)
        cpu = ("-", "-")
        if "cpu_per_call_us" in runs[0]:
            per_call = statistics.median(run["cpu_per_call_us"] for run in runs)
            execute = statistics.median(run["execute_us"] for run in runs)
            cpu = (f"{per_call:,.0f} µs", f"{per_call - execute:,.0f} µs")
        p50, p99 = (
            harness.percentile(latencies, 50) * 1e6,
            harness.percentile(latencies, 99) * 1e6,
        )
        print(f"| {name} | {p50:,.0f} µs | {p99:,.0f} µs | {rate:,.0f}/s | {cpu[0]} | {cpu[1]} |")
    print("\n| set-up | " + " | ".join(_size(size) for size in SIZES) + " |")
    print("|---|" + "---:|" * len(SIZES))
    for name, runs in results.items():
        if "sizes" not in runs[0]:
            continue
        cells = []
        for size in SIZES:
            median = statistics.median(run["sizes"][str(size)] for run in runs)
            cells.append(f"{median * 1e3:,.2f} ms")
        print(f"| {name} | " + " | ".join(cells) + " |")


def _size(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="append", default=[], help="NAME=CHECKOUT")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--map", type=int, default=20_000)
    parser.add_argument("--sizes-calls", type=int, default=5)
    parser.add_argument(
        "--block", nargs=2, metavar=("CHECKOUT", "TRANSPORT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.block:
        block(*args.block, args)
        return
    versions = [entry.split("=", 1) for entry in args.version]
    if not versions or any(len(entry) != 2 for entry in versions):
        parser.error("give --version NAME=CHECKOUT at least once")
    counts = ["--calls", str(args.calls), "--map", str(args.map)]
    counts += ["--sizes-calls", str(args.sizes_calls)]
    blocks = {
        f"{name} {transport}": (
            lambda path=path, transport=transport: harness.run_block(
                __file__, harness.checkout_of(path), [transport, *counts]
            )
        )
        for name, path in versions
        for transport in ("pipe", "shm")
    }
    blocks["ProcessPoolExecutor(4)"] = lambda: pool_block(args)
    results = harness.interleave(args.rounds, blocks)
    report(results, args)


if __name__ == "__main__":
    main()
