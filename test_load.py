"""Load test of a running gateway: the original challenge's parallel-sleep test,
then what it does not show (the transport, the distance to an ideal scheduler,
payload throughput, no-op latency).

    python test_load.py                          # $DISTRIBUTE_SERVER or grpc://127.0.0.1:8000
    python test_load.py --server grpc://HOST:PORT --plot load.png
    python test_load.py --compare --workers 10   # starts the gateway on pipe, then on shm
    python test_load.py --server grpc://127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003

Sections (``--sections``, default all):

- ``parallel``: for each factor (default 1, 2, 5, 10), ``workers * factor``
  calls of a function that sleeps ``random.random()`` seconds, all submitted at
  once with ``async_run``; the original figures (minimal and real execution
  time, effectiveness, the histogram of calls per worker), plus the makespan of
  an ideal FIFO list scheduler on the same sleeps (each call, in submission
  order, on the worker that frees up first, with zero overhead) and the
  efficiency against it: ideal / real. With several gateways (``--server``
  takes a list or ``dns:///NAME:PORT``, as ``compute_this`` does) the pool is
  every gateway's workers, the histogram spans them all, and each gateway's
  share of the calls follows it. It may exceed 100%: list scheduling is
  not optimal, and the calls reach the gateway's queue in nearly, not exactly,
  submission order, so the real order can happen to be a better one.
- ``payload``: echo of 1 KiB, 1 MiB, 16 MiB and 64 MiB; calls/s and MB/s
  (10^6 bytes of payload per second, each way).
- ``noop``: latency p50/p99 of sequential no-op calls, and calls/s of a burst
  of concurrent ones.
- ``map``: the same as one ``map`` over one stream each: the factors' sleeps
  again (real time, ideal FIFO, efficiency against it), and calls/s of
  ``--map-calls`` no-ops.

This file owns the measurements and the command line; ``loadtest/`` holds the
results, the text report, the plot and the gateways that ``--compare`` starts
(``target/release/mysticchallenge`` next to this file).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import os
import pathlib
import random
import sys
import time
from collections import Counter
from collections.abc import Callable

from distribute_challenge import DistributeError, compute_this
from distribute_challenge._gateways import GatewayWorkers
from distribute_challenge._target import resolve_server
from loadtest.gateway import GatewayFailed, started_gateway
from loadtest.report import (
    comparison_lines,
    emit,
    format_size,
    map_lines,
    noop_lines,
    parallel_lines,
    payload_lines,
    report_header,
)
from loadtest.results import GatewayShare, MapRun, NoopRun, ParallelRun, PayloadRun, Report

GATEWAY = pathlib.Path(__file__).resolve().parent / "target" / "release" / "mysticchallenge"
TRANSPORTS = ("pipe", "shm")
SECTIONS = ("parallel", "payload", "noop", "map")
FACTORS = (1, 2, 5, 10)
PAYLOAD_SIZES = (1 << 10, 1 << 20, 16 << 20, 64 << 20)
PAYLOAD_BYTES_PER_SIZE = 512 << 20  # bytes echoed per size, at most (and --payload-calls)
PAYLOAD_BYTES_IN_FLIGHT = 256 << 20  # bounds the concurrency of large echoes


# The remote functions. They travel by value (this file is __main__).


def nap(seconds):
    time.sleep(seconds)
    return seconds, os.getpid()


def echo(data):
    return data


def noop():
    return None


def identity(x):
    return x


# Talking to the gateway.


def pool_info(server: str | None) -> list[GatewayWorkers]:
    """Every gateway's GetWorkers answer (transport, and each worker's pid)."""
    answers = compute_this(server=server, timeout=30)(noop).get_gateways()
    for answer in answers:
        if answer.error is not None:
            raise answer.error
    return answers


def served_per_worker(
    pids: list[int], pools: list[list[GatewayWorkers]]
) -> tuple[list[int], list[int]]:
    """How many of ``pids`` each worker slot served, the slots of every
    gateway one after the other, and how many each gateway served. Workers
    that no GetWorkers answer saw (started and replaced between two answers)
    are appended to the slots (their gateway unknown: not in a share)."""
    sizes = [
        max(len(pool[gateway].info.workers) for pool in pools) for gateway in range(len(pools[0]))
    ]
    offsets = list(itertools.accumulate(sizes, initial=0))
    slot_of = {}
    gateway_of = {}
    for pool in pools:
        for gateway, answer in enumerate(pool):
            for w in answer.info.workers:
                if w.pid:
                    slot_of[w.pid] = offsets[gateway] + w.index
                    gateway_of[w.pid] = gateway
    served = [0] * offsets[-1]
    per_gateway = [0] * len(pools[0])
    unseen: Counter[int] = Counter()
    for pid in pids:
        if pid in slot_of:
            served[slot_of[pid]] += 1
            per_gateway[gateway_of[pid]] += 1
        else:
            unseen[pid] += 1
    return served + list(unseen.values()), per_gateway


class Progress:
    """A tqdm bar on stderr (only on a terminal unless forced off), or nothing."""

    enabled: bool | None = None  # None: tqdm decides (a terminal); False: never

    def __init__(self, total: int, description: str) -> None:
        self._bar = None
        if Progress.enabled is False:
            return
        try:
            from tqdm import tqdm
        except ImportError:  # the load extra is optional: no bar then
            return
        self._bar = tqdm(total=total, desc=description, leave=False, disable=None)

    def update(self) -> None:
        if self._bar is not None:
            self._bar.update()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


async def timed_concurrently(calls: list, limit: int, description: str) -> tuple[float, list]:
    """Awaits ``call.async_run()`` for each call, at most ``limit`` at once;
    returns the wall time and the results in order."""
    gate = asyncio.Semaphore(limit)
    progress = Progress(len(calls), description)

    async def one(call):
        async with gate:
            result = await call.async_run()
        progress.update()
        return result

    try:
        start = time.perf_counter()
        results = await asyncio.gather(*(one(call) for call in calls))
        return time.perf_counter() - start, results
    finally:
        progress.close()


# The sections.


async def measure_parallel(
    server: str | None, factor: int, sleeps: list[float], label: str
) -> ParallelRun:
    remote = compute_this(server=server)(nap)
    before = pool_info(server)
    workers = sum(answer.count for answer in before)
    calls = [remote(seconds) for seconds in sleeps]
    real, results = await timed_concurrently(calls, len(calls), f"{label}factor {factor}")
    served, per_gateway = served_per_worker(
        [pid for _, pid in results], [before, pool_info(server)]
    )
    shares = [
        GatewayShare(answer.target.url, answer.count, calls)
        for answer, calls in zip(before, per_gateway, strict=True)
    ]
    return ParallelRun(factor, workers, sleeps, real, served, shares)


def payload_plan(size: int, workers: int, max_calls: int) -> tuple[int, int]:
    """(calls, calls in flight) for one payload size."""
    in_flight = max(1, min(workers, PAYLOAD_BYTES_IN_FLIGHT // size))
    calls = max(in_flight, min(max_calls, PAYLOAD_BYTES_PER_SIZE // size))
    return calls, in_flight


async def measure_payload(
    server: str | None, size: int, workers: int, max_calls: int, label: str
) -> PayloadRun:
    remote = compute_this(server=server)(echo)
    data = random.randbytes(size)
    if await remote(data).async_run() != data:  # warm-up, and a check
        raise DistributeError(f"the echo of {format_size(size)} came back different")
    calls, in_flight = payload_plan(size, workers, max_calls)
    seconds, results = await timed_concurrently(
        [remote(data) for _ in range(calls)], in_flight, f"{label}echo {format_size(size)}"
    )
    if any(len(result) != size for result in results):
        raise DistributeError(f"an echo of {format_size(size)} came back truncated")
    return PayloadRun(size, calls, in_flight, seconds)


async def measure_noop(server: str | None, calls: int, label: str) -> NoopRun:
    remote = compute_this(server=server)(noop)
    for _ in range(min(calls, 20)):  # warm-up
        await remote().async_run()
    latencies = []
    progress = Progress(calls, f"{label}no-op latency")
    try:
        for _ in range(calls):
            start = time.perf_counter()
            await remote().async_run()
            latencies.append(time.perf_counter() - start)
            progress.update()
    finally:
        progress.close()
    burst, _ = await timed_concurrently(
        [remote() for _ in range(calls)], calls, f"{label}no-op burst"
    )
    return NoopRun(latencies, calls, burst)


def measure_map(server: str | None, sleeps_by_factor: list[tuple[int, list[float]]], calls: int):
    """The factors' sleeps and ``calls`` no-ops, each as one ``map``."""
    remote = compute_this(server=server)(nap)
    runs = []
    for factor, sleeps in sleeps_by_factor:
        before = pool_info(server)
        start = time.perf_counter()
        results = list(remote.map(sleeps))
        real = time.perf_counter() - start
        served, _ = served_per_worker([pid for _, pid in results], [before, pool_info(server)])
        runs.append(ParallelRun(factor, sum(a.count for a in before), sleeps, real, served))
    noops = compute_this(server=server)(identity)
    list(noops.map(range(min(calls, 1000))))  # warm-up
    start = time.perf_counter()
    if list(noops.map(range(calls))) != list(range(calls)):
        raise DistributeError("a map of no-ops came back with wrong results")
    return MapRun(runs, calls, time.perf_counter() - start)


def factor_sleeps(options: argparse.Namespace, workers: int) -> list[tuple[int, list[float]]]:
    """Each factor's sleeps, drawn from the seed (the same for every section)."""
    rng = random.Random(options.seed)
    return [
        (factor, [rng.random() * options.max_sleep for _ in range(workers * factor)])
        for factor in options.factors
    ]


async def measure(server: str | None, options: argparse.Namespace, label: str = "") -> Report:
    """Runs the chosen sections against ``server``, printing each as it ends."""
    pool = pool_info(server)
    transports = sorted({answer.info.transport for answer in pool})
    workers = [answer.count for answer in pool]
    report = Report(server or resolve_server(None).url, ",".join(transports), sum(workers))
    report.gateway_workers = workers
    emit(report_header(report, options.seed))
    sleeps_by_factor = factor_sleeps(options, report.workers)
    if "parallel" in options.sections:
        for factor, sleeps in sleeps_by_factor:
            run = await measure_parallel(server, factor, sleeps, label)
            report.parallel.append(run)
            emit(parallel_lines(run))
    if "payload" in options.sections:
        for size in options.payload_sizes:
            run = await measure_payload(server, size, report.workers, options.payload_calls, label)
            report.payload.append(run)
        emit(payload_lines(report.payload))
    if "noop" in options.sections:
        report.noop = await measure_noop(server, options.noop_calls, label)
        emit(noop_lines(report.noop))
    if "map" in options.sections:
        report.map = measure_map(server, sleeps_by_factor, options.map_calls)
        emit(map_lines(report.map))
    return report


def compare(options: argparse.Namespace) -> list[Report]:
    """The same workload on a fresh gateway per transport, then side by side."""
    reports = []
    for transport in TRANSPORTS:
        emit([f"== gateway on {transport}, {options.workers} workers"])
        with started_gateway(options.gateway, transport, options.workers) as url:
            reports.append(asyncio.run(measure(url, options, label=f"{transport}: ")))
        emit([""])
    emit(comparison_lines(reports))
    return reports


# Command line.


def parse_size(text: str) -> int:
    units = {"": 1, "B": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20}
    digits = text.strip().rstrip("bBiIkKmM").strip()
    unit = text.strip()[len(digits) :].strip().upper()
    if not digits.isdigit() or unit not in units or int(digits) <= 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1K, 16M, 4096)")
    return int(digits) * units[unit]


def comma_list(parse: Callable[[str], object]) -> Callable[[str], list]:
    def parse_all(text: str) -> list:
        try:
            return [parse(item) for item in text.split(",") if item.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse_all


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value


def section(text: str) -> str:
    if text.strip() not in SECTIONS:
        raise ValueError(f"unknown section {text!r}; choose among {', '.join(SECTIONS)}")
    return text.strip()


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--server", help="gateway URL (default $DISTRIBUTE_SERVER, else grpc://127.0.0.1:8000)")
    add(
        "--factors",
        type=comma_list(positive_int),
        default=list(FACTORS),
        metavar="1,2,5,10",
        help="calls = workers * factor, for each factor (default 1,2,5,10)",
    )
    add(
        "--max-sleep",
        type=positive_float,
        default=1.0,
        metavar="SECS",
        help="each call sleeps random.random() * SECS (default 1)",
    )
    add("--seed", type=int, help="seed of the sleeps (default: a random one, printed)")
    add(
        "--sections",
        type=comma_list(section),
        default=list(SECTIONS),
        metavar=",".join(SECTIONS),
        help="sections to run (default all)",
    )
    add(
        "--payload-sizes",
        type=comma_list(parse_size),
        default=list(PAYLOAD_SIZES),
        metavar="1K,1M,16M,64M",
        help="echo payload sizes (default 1K,1M,16M,64M)",
    )
    add(
        "--payload-calls",
        type=positive_int,
        default=200,
        metavar="N",
        help="echoes per size, at most (default 200; 512 MiB per size at most)",
    )
    add(
        "--noop-calls",
        type=positive_int,
        default=1000,
        metavar="N",
        help="sequential no-op calls, then N at once (default 1000)",
    )
    add(
        "--map-calls",
        type=positive_int,
        default=20_000,
        metavar="N",
        help="no-op calls of one map (default 20000)",
    )
    add("--compare", action="store_true", help="start the gateway on pipe, then on shm")
    add(
        "--workers",
        type=positive_int,
        metavar="N",
        help="workers of the gateways --compare starts (default: the CPUs)",
    )
    add(
        "--gateway",
        type=pathlib.Path,
        default=GATEWAY,
        metavar="BINARY",
        help="the gateway --compare starts (default target/release/mysticchallenge)",
    )
    add("--plot", metavar="FILE.png", help="write the plot (needs matplotlib)")
    add("--no-progress", action="store_true", help="no progress bars (tqdm, on a terminal)")
    options = parser.parse_args(argv)
    if options.compare and options.server:
        parser.error("--compare starts its own gateways: drop --server")
    if options.workers and not options.compare:
        parser.error("--workers is for the gateways --compare starts")
    if not options.factors or not options.sections:
        parser.error("--factors and --sections need at least one entry")
    if options.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install -e '.[load]' (make venv does)")
    options.workers = options.workers or os.cpu_count() or 1
    options.seed = random.randrange(1 << 32) if options.seed is None else options.seed
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    Progress.enabled = False if options.no_progress else None
    try:
        if options.compare:
            reports = compare(options)
        else:
            reports = [asyncio.run(measure(options.server, options))]
    except (DistributeError, GatewayFailed, ValueError) as exc:
        print(f"test_load.py: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("test_load.py: interrupted", file=sys.stderr)
        return 130
    if options.plot:
        from loadtest.plot import plot  # matplotlib loads only when asked for

        plot(reports, options.plot)
        print(f"\nplot: {options.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
