"""Many calls over one stream (``RemoteFunction.map`` and ``.stream()``)
against a local process pool, in one run, interleaved: the throughput of
no-op calls, the memory a long map takes, the original load test's random
sleeps, and the items of a remote generator.

    cargo build --release
    .venv/bin/python benches/python/map.py            # the figures (a few minutes)
    .venv/bin/python benches/python/map.py --quick    # a smoke run, a few seconds
    .venv/bin/python benches/python/map.py --json /tmp/map.json   # and a summary

Run it from a directory with no other ``worker_shim`` in it (the checkout's
root, or e.g. ``/tmp`` with the paths above made absolute): the workers run
``python -m worker_shim``, which puts their working directory first on
``sys.path``.

Sections (``--sections``, default all), each in rounds; a round runs one block
per contestant, in an order rotated from round to round, so that the
machine's drift hits all alike:

1. ``throughput``: 20,000 no-op calls, calls/s: ``noop.map(range(N))`` on the
   gateway (``--transport pipe|shm --workers 4``, started once);
   ``concurrent.futures.ProcessPoolExecutor(4)``, every worker process started
   before anything is measured: N ``submit`` then ``wait`` (``pool submit``),
   and ``pool.map(noop, range(N), chunksize=c)`` for each chunk size (1, 10,
   100, 1000, 5000); with the ratios of each map to the pool's submit rate and
   to its best ``pool.map``;
2. ``memory``: 100,000 and 1,000,000 no-ops through one ``map`` per transport,
   each on a fresh gateway (``VmHWM`` only ever grows, so a gateway measures
   one size), by a client in a child process (this script's hidden
   ``_client`` command) that checks each result as it comes and keeps none:
   the client's peak RSS (its ``VmHWM``; its ``ru_maxrss`` too, which starts
   at the launching process's peak) before and after the map, the gateway's
   ``VmHWM`` from ``/proc/<pid>/status`` at start and after the map, less the
   shm rings it touched (``RssShmem``, bounded by their size), and the calls/s
   of the run;
3. ``sleeps``: the original load test through ``map``: for each factor (1, 2,
   5, 10), ``workers * factor`` calls of ``nap``, which sleeps
   ``random.random()`` seconds (drawn from ``--seed`` and the round: the same
   sleeps for every contestant of a round), as ``nap.map(sleeps)``; the
   efficiency against an ideal FIFO list scheduler on the same sleeps (each
   call, in submission order, on the worker that frees up first, zero
   overhead; as ``test_load.py`` computes it): ideal / real;
4. ``stream``: ``gen(100_000).stream()``, a generator of small ints, items/s.

The functions are defined here, in ``__main__``, so they travel by value, as
users' functions do. Every result is checked. The output is Markdown, ready
to paste into BENCHMARKS.md, with a header (command, commit, machine, load
average), the ratios and a table of the targets (map at least 3x the pool's
submit rate, sleeps at least 99% of ideal FIFO, at least 50,000 items/s, RSS
bounded whatever the length of the input); progress goes to stderr.
``$MYSTIC_GATEWAY_BIN`` picks another gateway binary; ``--help`` for every
count.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import gc
import json
import multiprocessing
import os
import pathlib
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from _servers import GATEWAY, gateway_command, launched
from burst import status_kib
from harness import (
    binary,
    command_line,
    cpu_model,
    git_commit,
    load_average,
    markdown_table,
    memory_total,
    plural,
    progress,
    ratio,
    rotated,
    settings_from,
)

import distribute_challenge
from distribute_challenge import compute_this
from loadtest.results import fifo_makespan  # the load test's scheduler model

SECTIONS = ["throughput", "memory", "sleeps", "stream"]
TRANSPORTS = ["pipe", "shm"]
CLIENT = "_client"  # the hidden command of the memory section's child
CLIENT_WARMUP = 200  # calls the child makes before it measures anything
POOL_SUBMIT = "pool submit"
# The targets the figures are judged by.
MAP_OVER_SUBMIT = 3.0
SLEEP_EFFICIENCY = 0.99
ITEMS_PER_SECOND = 50_000
RSS_GROWTH = 1.25  # peak RSS at the largest size over the smallest, at most


def noop(x):
    return x


def nap(seconds):
    time.sleep(seconds)
    return seconds


def gen(n):
    yield from range(n)


# -- settings -------------------------------------------------------------------


@dataclass
class Settings:
    workers: int = 4
    calls: int = 20_000  # no-ops per throughput block
    rounds: int = 5  # of the throughput blocks
    warmup: int = 500  # untimed calls per contestant before the throughput
    chunksizes: list[int] = field(default_factory=lambda: [1, 10, 100, 1000, 5000])
    memory_sizes: list[int] = field(default_factory=lambda: [100_000, 1_000_000])
    memory_rounds: int = 1
    factors: list[int] = field(default_factory=lambda: [1, 2, 5, 10])
    max_sleep: float = 1.0  # each nap sleeps random.random() * this
    sleep_rounds: int = 2
    seed: int = 1
    items: int = 100_000  # of the generator
    stream_rounds: int = 5


QUICK = Settings(
    calls=500,
    rounds=1,
    warmup=20,
    chunksizes=[1, 100],
    memory_sizes=[2_000, 20_000],
    factors=[1, 2],
    max_sleep=0.05,
    sleep_rounds=1,
    items=2_000,
    stream_rounds=1,
)


def count(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1, not {value}")
    return value


def counts(text: str) -> list[int]:
    return list(dict.fromkeys(count(part) for part in text.split(",")))  # once each


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"more than 0, not {value}")
    return value


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny counts, 1 round")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=SECTIONS)
    parser.add_argument("--json", type=pathlib.Path, help="also write a summary there")
    parser.add_argument("--seed", type=int, help="of the sleeps (default 1)")
    flags = {
        "workers": (count, "workers of each gateway and of the pool"),
        "calls": (count, "no-op calls per throughput block"),
        "rounds": (count, "rounds of the throughput blocks"),
        "warmup": (count, "untimed calls per contestant before the throughput"),
        "chunksizes": (counts, "pool.map chunk sizes, comma-separated"),
        "memory-sizes": (counts, "calls of each memory run, comma-separated"),
        "memory-rounds": (count, "rounds of the memory runs"),
        "factors": (counts, "sleep factors (calls per worker), comma-separated"),
        "max-sleep": (seconds, "each nap sleeps random.random() times this"),
        "sleep-rounds": (count, "rounds of the sleeps"),
        "items": (count, "items of the generator"),
        "stream-rounds": (count, "rounds of the generator"),
    }
    for name, (kind, help_text) in flags.items():
        attribute = name.replace("-", "_")
        defaults = [shown_setting(getattr(s, attribute)) for s in (Settings(), QUICK)]
        parser.add_argument(
            f"--{name}",
            type=kind,
            help=f"{help_text} (default {defaults[0]}, --quick {defaults[1]})",
        )
    return parser.parse_args()


def shown_setting(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


# -- checks and timing ------------------------------------------------------------


def check_range(name: str, results: Iterable, calls: int) -> None:
    """`results` are 0, 1, ..., calls - 1, in order; taken one by one, kept
    nowhere, so that an iterator's results are checked as they come."""
    seen = 0
    for result in results:
        if result != seen:
            raise AssertionError(f"{name}: call {seen:,} answered {str(result)[:80]}")
        seen += 1
    if seen != calls:
        raise AssertionError(f"{name}: {seen:,} results for {calls:,} calls")


def timed(run: Callable[[], object]) -> tuple[float, object]:
    """Seconds `run()` took, after a garbage collection, and what it returned."""
    gc.collect()
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


# -- contestants ------------------------------------------------------------------
#
# Each has a `name` and `noops(calls)`: that many no-op calls, checked; it
# returns the seconds they took. Gateways also `naps(sleeps)` and
# `items(n)`, the same for the sleeps and the generator.


class Gateway:
    """The gateway through the public client API, one stream per block."""

    def __init__(self, transport: str, server: str) -> None:
        self.transport = transport
        self.name = f"{transport} map"
        self._noop = compute_this(server=server)(noop)
        self._nap = compute_this(server=server)(nap)
        self._gen = compute_this(server=server)(gen)

    def noops(self, calls: int) -> float:
        seconds, results = timed(lambda: list(self._noop.map(range(calls))))
        check_range(self.name, results, calls)
        return seconds

    def naps(self, sleeps: list[float]) -> float:
        seconds, results = timed(lambda: list(self._nap.map(sleeps)))
        if results != sleeps:
            raise AssertionError(f"{self.transport}: the naps answered other seconds")
        return seconds

    def items(self, n: int) -> float:
        seconds, _ = timed(
            lambda: check_range(f"{self.transport} stream", self._gen(n).stream(), n)
        )
        return seconds


class PoolSubmit:
    """`calls` submits, then a wait for all of them."""

    name = POOL_SUBMIT

    def __init__(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        self._pool = pool

    def noops(self, calls: int) -> float:
        def submit_all() -> list[concurrent.futures.Future]:
            futures = [self._pool.submit(noop, i) for i in range(calls)]
            concurrent.futures.wait(futures)
            return futures

        seconds, futures = timed(submit_all)
        check_range(self.name, (future.result() for future in futures), calls)
        return seconds


class PoolMap:
    """``pool.map`` with one chunk size."""

    def __init__(self, pool: concurrent.futures.ProcessPoolExecutor, chunksize: int) -> None:
        self.name = pool_map_name(chunksize)
        self._pool = pool
        self._chunksize = chunksize

    def noops(self, calls: int) -> float:
        seconds, results = timed(
            lambda: list(self._pool.map(noop, range(calls), chunksize=self._chunksize))
        )
        check_range(self.name, results, calls)
        return seconds


def pool_map_name(chunksize: int) -> str:
    return f"pool.map chunksize={chunksize}"


def warmed_pool(
    stack: contextlib.ExitStack, workers: int
) -> concurrent.futures.ProcessPoolExecutor:
    """A pool with every worker process started."""
    pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(workers))
    concurrent.futures.wait([pool.submit(time.sleep, 0.2) for _ in range(workers)])
    return pool


def started_gateway(stack: contextlib.ExitStack, transport: str, workers: int):
    """A gateway kept running until `stack` closes: its process and URL."""
    command = gateway_command(GATEWAY, transport, workers)
    process, url, _ = stack.enter_context(launched(command))
    return process, url


# -- 1. throughput ----------------------------------------------------------------


def throughput(contestants: list, settings: Settings) -> dict[str, list[float]]:
    """Calls/s of each round's block, by name."""
    for contestant in contestants:
        contestant.noops(settings.warmup)
    rates: dict[str, list[float]] = {c.name: [] for c in contestants}
    for round_number in range(settings.rounds):
        progress(f"throughput of {settings.calls:,}: round {round_number + 1}/{settings.rounds}")
        for contestant in rotated(contestants, round_number):
            rates[contestant.name].append(settings.calls / contestant.noops(settings.calls))
    return rates


# -- 2. memory --------------------------------------------------------------------


@dataclass
class MemoryRun:
    transport: str
    calls: int
    seconds: float
    client_before_kib: int  # the child's VmHWM after its warm-up
    client_peak_kib: int  # and after the map
    client_maxrss_kib: int  # its ru_maxrss after the map (see `client`)
    gateway_start_kib: int  # the gateway's VmHWM once it serves
    gateway_peak_kib: int  # and after the map
    gateway_rings_kib: int  # its RssShmem after the map: the shm rings' touched pages

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    @property
    def gateway_own_kib(self) -> int:
        """The gateway's peak less its rings, which stay mapped and resident."""
        return self.gateway_peak_kib - self.gateway_rings_kib


def memory_run(transport: str, calls: int, workers: int) -> MemoryRun:
    """One map of `calls` no-ops by a child client, on a fresh gateway."""
    with contextlib.ExitStack() as stack:
        process, url = started_gateway(stack, transport, workers)
        start_kib = status_kib(process.pid, "VmHWM")
        child = subprocess.run(
            [sys.executable, str(pathlib.Path(__file__).resolve()), CLIENT, url, str(calls)],
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if child.returncode != 0:
            raise SystemExit(f"the {transport} client of {calls:,} calls failed:\n{child.stderr}")
        peak_kib = status_kib(process.pid, "VmHWM")
        rings_kib = status_kib(process.pid, "RssShmem")
    measured = json.loads(child.stdout.splitlines()[-1])
    return MemoryRun(
        transport,
        calls,
        **measured,
        gateway_start_kib=start_kib,
        gateway_peak_kib=peak_kib,
        gateway_rings_kib=rings_kib,
    )


def memory(settings: Settings) -> list[MemoryRun]:
    runs = []
    blocks = [(size, transport) for size in settings.memory_sizes for transport in TRANSPORTS]
    for round_number in range(settings.memory_rounds):
        for size, transport in rotated(blocks, round_number):
            progress(
                f"memory: {size:,} calls on {transport}, "
                f"round {round_number + 1}/{settings.memory_rounds}"
            )
            runs.append(memory_run(transport, size, settings.workers))
    return runs


def client(url: str, calls: int) -> None:
    """The memory section's child: one map of `calls` no-ops, each result
    checked as it comes; prints its figures as JSON. Its peak is its
    ``VmHWM``: Linux carries ``ru_maxrss`` over ``execve``, so that this
    process's starts at its parent's (the benchmark's own) peak."""
    remote = compute_this(server=url)(noop)
    check_range("warm-up", remote.map(range(CLIENT_WARMUP)), CLIENT_WARMUP)
    before = status_kib("self", "VmHWM")
    start = time.perf_counter()
    check_range(f"{calls:,} calls", remote.map(range(calls)), calls)
    seconds = time.perf_counter() - start
    figures = {
        "seconds": seconds,
        "client_before_kib": before,
        "client_peak_kib": status_kib("self", "VmHWM"),
        "client_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # KiB on Linux
    }
    print(json.dumps(figures))


# -- 3. sleeps --------------------------------------------------------------------


@dataclass
class SleepRun:
    transport: str
    factor: int
    round: int
    ideal: float
    real: float

    @property
    def efficiency(self) -> float:
        return self.ideal / self.real


def round_sleeps(settings: Settings, round_number: int) -> dict[int, list[float]]:
    """Each factor's sleeps in one round: the same for every contestant."""
    rng = random.Random(f"{settings.seed}/{round_number}")
    return {
        factor: [rng.random() * settings.max_sleep for _ in range(settings.workers * factor)]
        for factor in settings.factors
    }


def sleeps(gateways: list[Gateway], settings: Settings) -> list[SleepRun]:
    runs = []
    for round_number in range(settings.sleep_rounds):
        progress(f"sleeps: round {round_number + 1}/{settings.sleep_rounds}")
        for factor, drawn in round_sleeps(settings, round_number).items():
            ideal = fifo_makespan(drawn, settings.workers)
            for gateway in rotated(gateways, round_number + factor):
                real = gateway.naps(drawn)
                runs.append(SleepRun(gateway.transport, factor, round_number, ideal, real))
    return runs


# -- 4. stream --------------------------------------------------------------------


def stream(gateways: list[Gateway], settings: Settings) -> dict[str, list[float]]:
    """Items/s of each round's generator, by transport."""
    for gateway in gateways:
        gateway.items(min(settings.items, 1000))
    rates: dict[str, list[float]] = {g.transport: [] for g in gateways}
    for round_number in range(settings.stream_rounds):
        progress(f"stream of {settings.items:,}: round {round_number + 1}/{settings.stream_rounds}")
        for gateway in rotated(gateways, round_number):
            rates[gateway.transport].append(settings.items / gateway.items(settings.items))
    return rates


# -- measuring --------------------------------------------------------------------


@dataclass
class Run:
    sections: list[str]
    throughput: dict[str, list[float]] = field(default_factory=dict)  # calls/s by name
    memory: list[MemoryRun] = field(default_factory=list)
    sleeps: list[SleepRun] = field(default_factory=list)
    stream: dict[str, list[float]] = field(default_factory=dict)  # items/s by transport


def measure_running(settings: Settings, run: Run) -> None:
    """The sections on the gateways and the pool started once, kept running."""
    wanted = set(run.sections) - {"memory"}
    if not wanted:
        return
    with contextlib.ExitStack() as stack:
        # The pool first: its processes fork before this one has gRPC threads.
        pool = warmed_pool(stack, settings.workers) if "throughput" in wanted else None
        progress("starting the gateways")
        gateways = [
            Gateway(transport, started_gateway(stack, transport, settings.workers)[1])
            for transport in TRANSPORTS
        ]
        if pool is not None:
            contestants = [*gateways, PoolSubmit(pool)]
            contestants += [PoolMap(pool, size) for size in settings.chunksizes]
            run.throughput = throughput(contestants, settings)
        if "sleeps" in wanted:
            run.sleeps = sleeps(gateways, settings)
        if "stream" in wanted:
            run.stream = stream(gateways, settings)


def measure(settings: Settings, sections: list[str]) -> Run:
    run = Run([name for name in SECTIONS if name in sections])
    measure_running(settings, run)
    if "memory" in run.sections:  # last, with nothing else running
        run.memory = memory(settings)
    return run


# -- the report -------------------------------------------------------------------


def per_second(value: float) -> str:
    return f"{value:,.0f}"


def mib(kib: float) -> str:
    return f"{kib / 1024:,.1f} MiB"


def percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def spread(values: list[float], shown: Callable[[float], str] = per_second) -> str:
    return f"{shown(min(values))}-{shown(max(values))}"


def medians(rates: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in rates.items()}


def best_pool_map(rates: dict[str, list[float]]) -> str | None:
    """The name of the pool.map with the highest median rate."""
    pool_maps = {n: v for n, v in medians(rates).items() if n.startswith("pool.map")}
    return max(pool_maps, key=pool_maps.get) if pool_maps else None


def throughput_table(rates: dict[str, list[float]]) -> list[str]:
    median = medians(rates)
    best = best_pool_map(rates)
    rows = [
        [
            f"**{name}**" if name == best else name,
            per_second(median[name]),
            spread(values),
            ratio(median[name], median.get(POOL_SUBMIT)),
            ratio(median[name], median.get(best)),
        ]
        for name, values in rates.items()
    ]
    header = ["contestant", "calls/s (median)", "min-max", "/ pool submit", "/ best pool.map"]
    return markdown_table(header, rows)


def memory_table(runs: list[MemoryRun], settings: Settings) -> list[str]:
    rows = []
    for size in settings.memory_sizes:
        for transport in TRANSPORTS:
            mine = [r for r in runs if r.calls == size and r.transport == transport]
            if not mine:
                continue

            def median_of(attribute: str, mine=mine) -> float:
                return statistics.median(getattr(r, attribute) for r in mine)

            rows.append(
                [
                    transport,
                    f"{size:,}",
                    per_second(median_of("rate")),
                    mib(median_of("client_before_kib")),
                    mib(median_of("client_peak_kib")),
                    mib(median_of("client_maxrss_kib")),
                    mib(median_of("gateway_start_kib")),
                    mib(median_of("gateway_peak_kib")),
                    mib(median_of("gateway_rings_kib")),
                    mib(median_of("gateway_own_kib")),
                ]
            )
    header = ["transport", "calls", "calls/s"]
    header += ["client VmHWM before the map", "after", "client ru_maxrss after"]
    header += ["gateway VmHWM at start", "after", "of which rings", "gateway less rings"]
    return markdown_table(header, rows)


def rss_growth(runs: list[MemoryRun], settings: Settings, attribute: str) -> dict[str, float]:
    """Per transport: the median `attribute` at the largest size over the smallest."""
    smallest, largest = min(settings.memory_sizes), max(settings.memory_sizes)
    growth = {}
    for transport in TRANSPORTS:
        at = {
            size: [
                getattr(r, attribute) for r in runs if r.transport == transport and r.calls == size
            ]
            for size in (smallest, largest)
        }
        if at[smallest] and at[largest]:
            growth[transport] = statistics.median(at[largest]) / statistics.median(at[smallest])
    return growth


def efficiencies(runs: list[SleepRun], transport: str, factor: int) -> list[float]:
    return [r.efficiency for r in runs if r.transport == transport and r.factor == factor]


def sleeps_table(runs: list[SleepRun], settings: Settings) -> list[str]:
    transports = [t for t in TRANSPORTS if any(r.transport == t for r in runs)]
    rows = []
    for factor in settings.factors:
        mine = [r for r in runs if r.factor == factor]
        row = [str(factor), f"{settings.workers * factor:,}"]
        row.append(f"{statistics.median(r.ideal for r in mine):.3f} s")
        for transport in transports:
            reals = [r.real for r in mine if r.transport == transport]
            found = efficiencies(runs, transport, factor)
            row += [f"{statistics.median(reals):.3f} s", percent(statistics.median(found))]
            row.append(spread(found, percent))
        rows.append(row)
    header = ["factor", "calls", "ideal FIFO (median)"]
    for transport in transports:
        header += [f"{transport} real (median)", f"{transport} ideal / real", "min-max"]
    return markdown_table(header, rows)


def stream_table(rates: dict[str, list[float]]) -> list[str]:
    median = medians(rates)
    rows = [
        [name, per_second(median[name]), spread(values), ratio(median[name], median.get("pipe"))]
        for name, values in rates.items()
    ]
    return markdown_table(["transport", "items/s (median)", "min-max", "/ pipe"], rows)


@dataclass
class Target:
    what: str
    by_transport: dict[str, str]  # the figure, shown
    met: bool


def targets(run: Run, settings: Settings) -> list[Target]:
    found = []
    if run.throughput:
        median = medians(run.throughput)
        submit = median[POOL_SUBMIT]
        found.append(
            Target(
                f"{settings.calls:,} no-ops: map / pool submit >= {MAP_OVER_SUBMIT:.0f}x",
                {t: ratio(median[f"{t} map"], submit) for t in TRANSPORTS},
                all(median[f"{t} map"] >= MAP_OVER_SUBMIT * submit for t in TRANSPORTS),
            )
        )
    if run.memory:
        for attribute, label in (
            ("client_peak_kib", "client peak RSS (VmHWM)"),
            ("gateway_own_kib", "gateway peak RSS less rings"),
        ):
            growth = rss_growth(run.memory, settings, attribute)
            sizes = f"{max(settings.memory_sizes):,} / {min(settings.memory_sizes):,} calls"
            found.append(
                Target(
                    f"{label}, {sizes} <= {RSS_GROWTH:.2f}x",
                    {t: f"{g:.2f}x" for t, g in growth.items()},
                    all(g <= RSS_GROWTH for g in growth.values()),
                )
            )
    if run.sleeps:
        worst = {
            t: min(statistics.median(efficiencies(run.sleeps, t, f)) for f in settings.factors)
            for t in TRANSPORTS
        }
        found.append(
            Target(
                f"random sleeps: ideal FIFO / real >= {percent(SLEEP_EFFICIENCY)} "
                "(worst factor's median)",
                {t: percent(e) for t, e in worst.items()},
                all(e >= SLEEP_EFFICIENCY for e in worst.values()),
            )
        )
    if run.stream:
        median = medians(run.stream)
        found.append(
            Target(
                f"generator: items/s >= {ITEMS_PER_SECOND:,}",
                {t: per_second(median[t]) for t in TRANSPORTS},
                all(median[t] >= ITEMS_PER_SECOND for t in TRANSPORTS),
            )
        )
    return found


def targets_table(found: list[Target]) -> list[str]:
    rows = [
        [
            t.what,
            *(t.by_transport.get(name, "-") for name in TRANSPORTS),
            "yes" if t.met else "**no**",
        ]
        for t in found
    ]
    return markdown_table(["target", *TRANSPORTS, "met"], rows)


# -- the header -------------------------------------------------------------------


def environment() -> dict[str, str]:
    return {
        "commit": git_commit(),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "ram": memory_total(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pool start method": multiprocessing.get_start_method(),
        "gateway": binary(GATEWAY),
        "client": str(pathlib.Path(distribute_challenge.__file__).parent),
    }


def header(env: dict[str, str], loads: tuple[str, str], settings: Settings, run: Run) -> list[str]:
    return [
        f"`{command_line('map.py')}`",
        "",
        f"- commit {env['commit']}; {env['cpu']}, {env['cores']} cores, {env['ram']}; "
        f"{env['kernel']}; Python {env['python']} (pool start method: {env['pool start method']})",
        f"- gateway {env['gateway']}; client {env['client']}",
        f"- load average before {loads[0]}, after {loads[1]}",
        f"- {settings.workers} workers for each gateway and the pool; sections: "
        f"{', '.join(run.sections)}; seed of the sleeps {settings.seed}",
    ]


def report(settings: Settings, env: dict[str, str], loads: tuple[str, str], run: Run) -> str:
    lines = header(env, loads, settings, run)
    if run.throughput:
        lines += [
            "",
            f"Throughput of {settings.calls:,} no-op calls, calls/s, "
            f"{plural(settings.rounds, 'round')} (the best pool.map in bold):",
            "",
            *throughput_table(run.throughput),
        ]
    if run.memory:
        lines += memory_section(run.memory, settings)
    if run.sleeps:
        lines += [
            "",
            f"The random sleeps through map: `workers * factor` naps of up to "
            f"{settings.max_sleep:g} s, {plural(settings.sleep_rounds, 'round')}:",
            "",
            *sleeps_table(run.sleeps, settings),
        ]
    if run.stream:
        lines += [
            "",
            f"A generator of {settings.items:,} ints through `.stream()`, "
            f"{plural(settings.stream_rounds, 'round')}:",
            "",
            *stream_table(run.stream),
        ]
    lines += ["", "Targets:", "", *targets_table(targets(run, settings))]
    return "\n".join(lines)


def memory_section(runs: list[MemoryRun], settings: Settings) -> list[str]:
    return [
        "",
        f"Memory: one map of no-ops by a client in a child process, a fresh gateway per "
        f"run, {plural(settings.memory_rounds, 'round')} (medians):",
        "",
        *memory_table(runs, settings),
        "",
        "The client checks each result as it comes and keeps none; its peak RSS is its "
        f"`VmHWM`, before the map (after {CLIENT_WARMUP} warm-up calls) and after it. Its "
        "`ru_maxrss` is shown too, but Linux carries that over `execve`: it starts at the peak "
        "of the benchmark that launched it. The gateway's is the `VmHWM` of its own process "
        "(not its workers), once it serves and after the map; the rings are its `RssShmem` "
        "after the map, the shm transport's rings (2 per worker of `--ring-bytes`, 4 MiB by "
        "default), resident as the calls go round them and at most their size whatever the "
        "input's length: the target leaves them out.",
    ]


def write_json(path: pathlib.Path, settings, env, loads, run: Run) -> None:
    document = {
        "command": command_line("map.py"),
        "environment": env,
        "load_average": {"before": loads[0], "after": loads[1]},
        "settings": asdict(settings),
        "sections": run.sections,
        "throughput_calls_per_second": run.throughput,
        "best_pool_map": best_pool_map(run.throughput),
        "memory": [{**asdict(r), "calls_per_second": r.rate} for r in run.memory],
        "sleeps": [{**asdict(r), "efficiency": r.efficiency} for r in run.sleeps],
        "stream_items_per_second": run.stream,
        "targets": [asdict(t) for t in targets(run, settings)],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


# -- main -------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == CLIENT:
        client(sys.argv[2], int(sys.argv[3]))
        return
    options = arguments()
    settings = settings_from(options, Settings(), QUICK)
    if not GATEWAY.exists():
        sys.exit(f"{GATEWAY} is missing: run `cargo build --release` first")
    load_before = load_average()
    started = time.monotonic()
    run = measure(settings, options.sections)
    progress(f"measured in {time.monotonic() - started:.0f} s")
    loads = (load_before, load_average())
    env = environment()
    print(report(settings, env, loads, run))
    if options.json is not None:
        write_json(options.json, settings, env, loads, run)


if __name__ == "__main__":
    main()
