"""The gateway on both transports against `concurrent.futures.ProcessPoolExecutor`,
the local baseline, measured end to end through the client in one run.

    cargo build --release
    .venv/bin/python benches/python/pool_baseline.py            # the figures in BENCHMARKS.md
    .venv/bin/python benches/python/pool_baseline.py --quick    # a smoke run, a few seconds

Three workloads, each on a gateway with `--workers 4` per transport and on a
`ProcessPoolExecutor(4)`:

- no-op latency: p50 and p99 of sequential calls (`run()` / `submit().result()`)
  after a warm-up;
- throughput: wall time of no-op calls all submitted at once
  (`asyncio.gather` over `async_run()` / `submit` then `wait`);
- echo: median round trip of a 64 MiB `bytes` argument returned as is.

Ratios are the gateway's time over the pool's (1.00x: as fast; 2.00x: twice
as long), so smaller is better throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from _servers import REPO, gateway

from distribute_challenge import compute_this

BASELINE = "ProcessPoolExecutor"


def noop():
    return None


def echo(data):
    return data


@dataclass
class Settings:
    workers: int
    latency_calls: int
    warmup_calls: int
    throughput_calls: int
    echo_bytes: int
    echo_repeats: int


@dataclass
class Figures:
    p50: float
    p99: float
    throughput_seconds: float
    echo_seconds: float


@dataclass
class Subject:
    """One way to run functions in other processes, as the workloads need it."""

    call_noop: Callable[[], object]
    run_noops: Callable[[int], float]  # submits n no-op calls at once; their wall time
    call_echo: Callable[[bytes], bytes]


def latency(call: Callable[[], object], settings: Settings) -> tuple[float, float]:
    for _ in range(settings.warmup_calls):
        call()
    samples = []
    for _ in range(settings.latency_calls):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[98]


def echo_round_trip(call: Callable[[bytes], bytes], settings: Settings) -> float:
    data = os.urandom(settings.echo_bytes)
    if call(data) != data:  # warm-up: first-touch page faults, buffers
        raise AssertionError("the echo came back different")
    samples = []
    for _ in range(settings.echo_repeats):
        start = time.perf_counter()
        result = call(data)
        samples.append(time.perf_counter() - start)
        if len(result) != len(data):
            raise AssertionError("the echo came back different")
    return statistics.median(samples)


def measure(subject: Subject, settings: Settings) -> Figures:
    p50, p99 = latency(subject.call_noop, settings)
    throughput_seconds = subject.run_noops(settings.throughput_calls)
    return Figures(p50, p99, throughput_seconds, echo_round_trip(subject.call_echo, settings))


def measure_gateway(transport: str, settings: Settings) -> Figures:
    with gateway(transport, settings.workers) as url:
        remote_noop = compute_this(server=url)(noop)
        remote_echo = compute_this(server=url)(echo)

        async def gather(count: int) -> float:
            await remote_noop().async_run()  # this loop's channel, connected
            start = time.perf_counter()
            results = await asyncio.gather(*(remote_noop().async_run() for _ in range(count)))
            seconds = time.perf_counter() - start
            assert results == [None] * count
            return seconds

        return measure(
            Subject(
                call_noop=lambda: remote_noop().run(),
                run_noops=lambda count: asyncio.run(gather(count)),
                call_echo=lambda data: remote_echo(data).run(),
            ),
            settings,
        )


def measure_pool(settings: Settings) -> Figures:
    with concurrent.futures.ProcessPoolExecutor(settings.workers) as pool:
        # Start every process before timing anything.
        concurrent.futures.wait([pool.submit(time.sleep, 0.2) for _ in range(settings.workers)])

        def submit_all(count: int) -> float:
            start = time.perf_counter()
            futures = [pool.submit(noop) for _ in range(count)]
            concurrent.futures.wait(futures)
            seconds = time.perf_counter() - start
            assert [future.result() for future in futures] == [None] * count
            return seconds

        return measure(
            Subject(
                call_noop=lambda: pool.submit(noop).result(),
                run_noops=submit_all,
                call_echo=lambda data: pool.submit(echo, data).result(),
            ),
            settings,
        )


def environment() -> list[str]:
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        pass
    return [
        f"commit {commit}; {cpu}, {os.cpu_count()} CPUs; {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()} "
        f"(pool start method: {multiprocessing.get_start_method()})",
    ]


def load_average() -> str:
    try:
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "unknown"


def milliseconds(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.3f} ms" if ms < 1 else f"{ms:.2f} ms" if ms < 100 else f"{ms:.0f} ms"


def table(results: dict[str, Figures], settings: Settings) -> list[str]:
    names = [name for name in results if name != BASELINE]
    header = [BASELINE, *names, *(f"{name} / pool" for name in names)]
    lines = ["| workload | " + " | ".join(header) + " |", "|---" + "|---:" * len(header) + "|"]

    def row(label: str, seconds: Callable[[Figures], float], show: Callable[[Figures], str]):
        base = seconds(results[BASELINE])
        cells = [show(results[BASELINE]), *(show(results[name]) for name in names)]
        cells += [f"{seconds(results[name]) / base:.2f}x" for name in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    calls = settings.latency_calls
    row(f"no-op latency p50 ({calls:,} calls)", lambda f: f.p50, lambda f: milliseconds(f.p50))
    row(f"no-op latency p99 ({calls:,} calls)", lambda f: f.p99, lambda f: milliseconds(f.p99))
    count = settings.throughput_calls
    row(
        f"{count:,} no-op calls at once, {settings.workers} workers",
        lambda f: f.throughput_seconds,
        lambda f: f"{f.throughput_seconds:.2f} s ({count / f.throughput_seconds:,.0f} calls/s)",
    )
    size = settings.echo_bytes
    label = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
    row(
        f"{label} echo (median of {settings.echo_repeats})",
        lambda f: f.echo_seconds,
        lambda f: milliseconds(f.echo_seconds),
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer calls and repeats: a smoke run, not figures"
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--transports", nargs="+", default=["pipe", "shm"])
    parser.add_argument("--calls", type=int, help="sequential no-op calls for latency")
    parser.add_argument("--throughput-calls", type=int, help="no-op calls submitted at once")
    parser.add_argument("--echo-mib", type=int, help="echo payload size")
    parser.add_argument("--echo-repeats", type=int, help="timed echo round trips")
    options = parser.parse_args()
    if options.quick:
        settings = Settings(options.workers, 200, 20, 2_000, 64 << 20, 2)
    else:
        settings = Settings(options.workers, 2_000, 200, 20_000, 64 << 20, 7)
    if options.calls is not None:
        settings.latency_calls = options.calls
        settings.warmup_calls = min(settings.warmup_calls, options.calls)
    if options.throughput_calls is not None:
        settings.throughput_calls = options.throughput_calls
    if options.echo_mib is not None:
        settings.echo_bytes = options.echo_mib << 20
    if options.echo_repeats is not None:
        settings.echo_repeats = options.echo_repeats

    load_before = load_average()
    results = {BASELINE: measure_pool(settings)}
    for transport in options.transports:
        results[transport] = measure_gateway(transport, settings)

    command = " ".join([".venv/bin/python", "benches/python/pool_baseline.py", *sys.argv[1:]])
    for line in table(results, settings):
        print(line)
    print()
    print(f"Ratios: the gateway's time over {BASELINE}({settings.workers})'s; smaller is better.")
    for line in environment():
        print(line)
    print(f"load average before {load_before}, after {load_average()}")
    print(f"command: {command}")


if __name__ == "__main__":
    main()
