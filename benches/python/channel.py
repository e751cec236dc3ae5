"""The worker's channel, two checkouts against each other and each transport
against the other, interleaved in one run, with a local
``ProcessPoolExecutor(4)`` in the same rounds:

- 1 KiB echo, ``--calls`` sequential calls: p50 and p99;
- ``--map`` no-ops through ``map``: calls per second;
- the workers' CPU per no-op call (user + system of every process under the
  gateway, over the map), and the part of it outside the function and its
  pickling (less ``execute``'s own time for the same call, in this process);
- echo of 1 KiB to 64 MiB: median of ``--sizes-calls`` calls each.

    git worktree add /tmp/before OLD_COMMIT && (cd /tmp/before && cargo build --release)
    .venv/bin/python benches/python/channel.py --version before=/tmp/before --version after=.

Each block runs in a fresh process with ``PYTHONPATH`` set to its checkout
(and the environment variables given after it, if any) and a temporary
working directory, against the checkout's
``target/release/mysticchallenge --workers 4``. Rounds alternate the order.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

SIZES = [1 << 10, 64 << 10, 1 << 20, 8 << 20, 64 << 20]
TICK = os.sysconf("SC_CLK_TCK")


def noop(_=None):
    return None


def echo(value):
    return value


def _descendants_cpu(root: int) -> float:
    """Seconds of CPU (user + system) of every live process under ``root``."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        times[pid] = (int(fields[11]) + int(fields[12])) / TICK
    total, stack = 0.0, list(children.get(root, []))
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack += children.get(pid, [])
    return total


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


def block(binary: str, transport: str, args: argparse.Namespace) -> None:
    """One checkout's block on one transport, in this process."""
    from distribute_challenge import compute_this

    command = [binary, "--listen", "127.0.0.1:0", "--transport", transport]
    command += ["--workers", "4", "--python", sys.executable]
    with tempfile.TemporaryFile() as log:
        gateway = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            url = gateway.stdout.readline().strip().removeprefix("serving ")
            remote = compute_this(server=url)
            figures = _measure(remote, lambda: _descendants_cpu(gateway.pid), args)
        finally:
            gateway.terminate()
            gateway.wait()
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


def run_block(
    checkout: pathlib.Path, variables: list[str], transport: str, args: argparse.Namespace
) -> dict:
    binary = checkout / "target" / "release" / "mysticchallenge"
    env = dict(os.environ, PYTHONPATH=str(checkout))
    env.update(variable.split("=", 1) for variable in variables)
    command = [sys.executable, __file__, "--block", str(binary), transport]
    command += ["--calls", str(args.calls), "--map", str(args.map)]
    command += ["--sizes-calls", str(args.sizes_calls)]
    with tempfile.TemporaryDirectory() as workdir:
        finished = subprocess.run(command, env=env, capture_output=True, text=True, cwd=workdir)
    if finished.returncode != 0:
        sys.exit(f"the block of {checkout} on {transport} failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


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
        p50, p99 = _percentile(latencies, 0.5) * 1e6, _percentile(latencies, 0.99) * 1e6
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
    parser.add_argument(
        "--version", action="append", default=[], help="NAME=CHECKOUT [VARIABLE=VALUE...]"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--map", type=int, default=20_000)
    parser.add_argument("--sizes-calls", type=int, default=5)
    parser.add_argument("--block", nargs=2, metavar=("BINARY", "TRANSPORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.block:
        block(*args.block, args)
        return
    versions = [entry.split("=", 1) for entry in args.version]
    if not versions or any(len(entry) != 2 for entry in versions):
        parser.error("give --version NAME=CHECKOUT at least once")
    results: dict[str, list[dict]] = {}
    for number in range(args.rounds):
        order = versions if number % 2 == 0 else versions[::-1]
        for name, checkout in order:
            path, *variables = checkout.split()
            for transport in ("pipe", "shm") if number % 2 == 0 else ("shm", "pipe"):
                figures = run_block(pathlib.Path(path).resolve(), variables, transport, args)
                results.setdefault(f"{name} {transport}", []).append(figures)
        results.setdefault("ProcessPoolExecutor(4)", []).append(pool_block(args))
        print(f"round {number + 1}/{args.rounds}", file=sys.stderr)
    report(results, args)


if __name__ == "__main__":
    main()
