"""Small calls and payload sizes on every contestant in one run, interleaved:
the gateway on each transport, a local process pool and the bare gRPC hop.

    cargo build --release && cargo build --release --example echo_server
    .venv/bin/python benches/python/compare.py            # the figures (a few minutes)
    .venv/bin/python benches/python/compare.py --quick    # a smoke run, a few seconds
    .venv/bin/python benches/python/compare.py --json /tmp/compare.json   # and a summary

Contestants, all started once and kept running for the whole run:

- ``pipe``, ``shm``: the gateway (``--transport pipe|shm --workers 4``);
- ``shm-unix``: the shm gateway on a Unix socket (``--listen unix:PATH``),
  skipped (the output says why) when the gateway refuses that address;
- ``pool``: ``concurrent.futures.ProcessPoolExecutor(4)``, every worker
  process started before anything is measured;
- ``grpc-echo``: the bare tonic echo server (``examples/echo_server.rs``: the
  gateway's gRPC API and HTTP/2 settings, no workers, no pickling) called by
  the same Python gRPC stack with the payload as is: the gRPC hop alone.

Workloads, each in rounds; a round runs one block per contestant, in an order
rotated from round to round, so that the machine's drift hits all alike:

1. no-op latency: sequential ``noop().run()`` (pool: ``submit(noop).result()``;
   grpc-echo: ``Execute`` of a payload the size of a no-op request), p50 and
   p99 over every round's samples, each block after a few warm-up calls;
2. 1 KiB echo latency: ``echo(data).run()``, the same way;
3. a payload sweep (1 KiB to 16 MiB): the median round trip of sequential
   ``echo(data).run()`` calls per size, and the throughput of 16 echo calls
   at once (``asyncio.gather`` over ``async_run()``; pool: ``submit`` then
   ``wait``), in payload bytes per second;
4. a burst: ``asyncio.gather`` of 20,000 ``noop().async_run()`` on one event
   loop (pool: 20,000 ``submit`` then ``wait``; grpc-echo: 20,000 ``grpc.aio``
   ``Execute``), calls/s; fewer rounds than the others, it is heavy.

The functions are defined here, in ``__main__``, so they travel by value, as
users' functions do. Every result is checked. The output is Markdown, ready
to paste into BENCHMARKS.md, with a header (command, commit, machine, load
average) and the ratios the targets are judged by; progress goes to stderr.
``$MYSTIC_GATEWAY_BIN`` and ``$MYSTIC_ECHO_SERVER_BIN`` pick other binaries;
``--contestants`` some of them (``--help`` for every count);
``--sizes 1K,64K,1M,16M,64M`` adds the 64 MiB echo the pool was once
compared on (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import json
import multiprocessing
import os
import pathlib
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import grpc
import grpc.aio
from _servers import ECHO_SERVER, GATEWAY, GRPCIO_OPTIONS, DidNotStart, echo_server, gateway
from harness import (
    binary,
    byte_rate,
    command_line,
    count,
    cpu_model,
    duration,
    git_commit,
    load_average,
    markdown_table,
    parse_sizes,
    percentile,
    plural,
    progress,
    ratio,
    rotated,
    settings_from,
    size_label,
    summary,
    timed,
)

import distribute_challenge
from distribute_challenge import DistributeError, compute_this
from distribute_challenge._pb import gateway_pb2, gateway_pb2_grpc

POOL = "pool"
ECHO = "grpc-echo"
CONTESTANTS = ["pipe", "shm", "shm-unix", POOL, ECHO]
KIB, MIB = 1 << 10, 1 << 20


def noop():
    return None


def echo(data):
    return data


# -- settings -------------------------------------------------------------------


@dataclass
class Settings:
    workers: int = 4
    rounds: int = 10  # of the latency blocks
    calls: int = 200  # timed calls per latency block
    warmup: int = 200  # calls per contestant before anything is timed
    block_warmup: int = 10  # untimed calls at the start of each block
    echo_bytes: int = KIB
    noop_bytes: int = 64  # grpc-echo's stand-in for a no-op call's request
    burst: int = 20_000
    burst_rounds: int = 3
    sizes: list[int] = field(default_factory=lambda: [KIB, 64 * KIB, MIB, 16 * MIB])
    sweep_rounds: int = 5
    sweep_calls: int = 10  # sequential echo calls per block, sizes up to 1 MiB
    sweep_large_calls: int = 3  # the same above 1 MiB
    concurrency: int = 16  # echo calls at once, for the throughput


QUICK = Settings(
    rounds=1,
    calls=20,
    warmup=5,
    block_warmup=2,
    burst=500,
    burst_rounds=1,
    sizes=[KIB, 64 * KIB],
    sweep_rounds=1,
    sweep_calls=3,
    sweep_large_calls=1,
)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny counts, 1 round")
    parser.add_argument(
        "--contestants", nargs="+", choices=CONTESTANTS, default=CONTESTANTS, help="default: all"
    )
    parser.add_argument("--json", type=pathlib.Path, help="also write a summary there")
    flags = {
        "workers": "workers of each gateway and of the pool",
        "rounds": "rounds of the latency blocks",
        "calls": "timed calls per latency block",
        "warmup": "untimed calls per contestant at the start",
        "block-warmup": "untimed calls at the start of each block",
        "echo-bytes": "payload of the echo latency",
        "noop-bytes": "grpc-echo's payload standing for a no-op request",
        "burst": "no-op calls at once",
        "burst-rounds": "rounds of the burst",
        "sweep-rounds": "rounds of the payload sweep",
        "sweep-calls": "sequential echo calls per sweep block, sizes up to 1 MiB",
        "sweep-large-calls": "the same, sizes above 1 MiB",
        "concurrency": "echo calls at once in the sweep's throughput",
    }
    full, quick = Settings(), QUICK
    for name, help_text in flags.items():
        attribute = name.replace("-", "_")
        defaults = f"{getattr(full, attribute)}, --quick {getattr(quick, attribute)}"
        parser.add_argument(
            f"--{name}",
            type=lambda text, least=0 if "warmup" in name else 1: count(text, least),
            help=f"{help_text} (default {defaults})",
        )
    sizes = [",".join(size_label(n).replace(" ", "") for n in s.sizes) for s in (full, quick)]
    parser.add_argument(
        "--sizes", type=parse_sizes, help=f"sweep sizes (default {sizes[0]}, --quick {sizes[1]})"
    )
    return parser.parse_args()


# -- contestants ----------------------------------------------------------------
#
# Each has a `name`; `noop()` and `echo(data)`, one call that the caller times;
# `burst(count)` and `echo_many(data, count)`, that many calls at once, which
# return their wall time in seconds once every answer is checked.


class Gateway:
    """The gateway through the public client API."""

    def __init__(self, name: str, server: str, runner: asyncio.Runner) -> None:
        self.name = name
        self._noop = compute_this(server=server)(noop)
        self._echo = compute_this(server=server)(echo)
        self._runner = runner

    def noop(self) -> object:
        return self._noop().run()

    def echo(self, data: bytes) -> object:
        return self._echo(data).run()

    def burst(self, count: int) -> float:
        return self._runner.run(
            timed_gather(self.name, lambda: self._noop().async_run(), count, None)
        )

    def echo_many(self, data: bytes, count: int) -> float:
        return self._runner.run(
            timed_gather(self.name, lambda: self._echo(data).async_run(), count, data)
        )


class Pool:
    """A warmed ``ProcessPoolExecutor``."""

    name = POOL

    def __init__(self, pool: concurrent.futures.ProcessPoolExecutor, workers: int) -> None:
        # Start every process before anything is timed.
        concurrent.futures.wait([pool.submit(time.sleep, 0.2) for _ in range(workers)])
        self._pool = pool

    def noop(self) -> object:
        return self._pool.submit(noop).result()

    def echo(self, data: bytes) -> object:
        return self._pool.submit(echo, data).result()

    def burst(self, count: int) -> float:
        return self._submit_all(count, (noop,), None)

    def echo_many(self, data: bytes, count: int) -> float:
        return self._submit_all(count, (echo, data), data)

    def _submit_all(self, count: int, call: tuple, expected: object) -> float:
        start = time.perf_counter()
        futures = [self._pool.submit(*call) for _ in range(count)]
        concurrent.futures.wait(futures)
        seconds = time.perf_counter() - start
        check_all(self.name, [future.result() for future in futures], expected)
        return seconds


class EchoServer:
    """The bare echo server through the generated stubs: sync for the
    sequential calls, ``grpc.aio`` for the concurrent ones."""

    name = ECHO

    def __init__(self, url: str, runner: asyncio.Runner, noop_bytes: int) -> None:
        address = url.removeprefix("grpc://")
        self._channel = grpc.insecure_channel(address, options=GRPCIO_OPTIONS)
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)
        self._aio_channel = runner.run(_aio_channel(address))
        self._aio_stub = gateway_pb2_grpc.GatewayStub(self._aio_channel)
        self._noop_request = gateway_pb2.ExecuteRequest(payload=os.urandom(noop_bytes))
        self._runner = runner

    def noop(self) -> object:
        self._stub.Execute(self._noop_request)
        return None

    def echo(self, data: bytes) -> object:
        return self._stub.Execute(gateway_pb2.ExecuteRequest(payload=data)).payload

    def burst(self, count: int) -> float:
        return self._runner.run(timed_gather(self.name, self._async_noop, count, None))

    def echo_many(self, data: bytes, count: int) -> float:
        return self._runner.run(
            timed_gather(self.name, lambda: self._async_echo(data), count, data)
        )

    async def _async_noop(self) -> None:
        await self._aio_stub.Execute(self._noop_request)

    async def _async_echo(self, data: bytes) -> bytes:
        return (await self._aio_stub.Execute(gateway_pb2.ExecuteRequest(payload=data))).payload

    def close(self) -> None:
        self._runner.run(self._aio_channel.close())
        self._channel.close()


async def _aio_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=GRPCIO_OPTIONS)


async def timed_gather(
    name: str, call: Callable[[], Awaitable], count: int, expected: object
) -> float:
    """Seconds until `count` calls started at once have all answered; the
    answers are checked afterwards. Only the seconds leave the event loop:
    Python 3.11's `asyncio.Runner.run` takes the repr of its task, result
    included (restoring the SIGINT handler), which for megabytes of answers
    takes longer than the calls."""
    start = time.perf_counter()
    results = await asyncio.gather(*(call() for _ in range(count)))
    seconds = time.perf_counter() - start
    check_all(name, results, expected)
    return seconds


def start_gateways(
    stack: contextlib.ExitStack, names: list[str], workers: int, skipped: dict[str, str]
) -> dict[str, str]:
    """Starts the gateways among `names`; their client `server` strings by name.
    A `shm-unix` the gateway refuses goes to `skipped`, with the reason."""
    servers = {}
    for name in ("pipe", "shm"):
        if name in names:
            servers[name] = stack.enter_context(gateway(name, workers))
    if "shm-unix" in names:
        socket = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory())) / "gw.sock"
        try:
            stack.enter_context(gateway("shm", workers, listen=f"unix:{socket}"))
            servers["shm-unix"] = f"unix:{socket}"
        except DidNotStart as refused:
            skipped["shm-unix"] = "the gateway refused `--listen unix:PATH`: " + first_error(
                str(refused)
            )
    return servers


def first_error(log: str) -> str:
    lines = [line.strip() for line in log.splitlines()[1:] if line.strip()]
    return next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")


def warm_up(contestant, settings: Settings, skipped: dict[str, str]) -> bool:
    """Untimed calls of every kind. If they fail, shm-unix is skipped (False,
    and the reason in `skipped`); any other contestant ends the run."""
    data = os.urandom(settings.echo_bytes)
    try:
        for _ in range(settings.warmup):
            check(contestant.noop(), None, contestant)
            check(contestant.echo(data), data, contestant)
        contestant.burst(min(settings.burst, 100))
    except (grpc.RpcError, DistributeError) as error:
        reason = f"its warm-up calls failed: {error!r}"
        if contestant.name != "shm-unix":
            raise SystemExit(f"{contestant.name}: {reason}") from error
        skipped[contestant.name] = reason[:300]
        return False
    return True


def check(result: object, expected: object, contestant) -> None:
    check_all(contestant.name, [result], expected)


def check_all(name: str, results: list, expected: object) -> None:
    for result in results:
        if result != expected:
            raise AssertionError(f"{name} answered {shown(result)}, not {shown(expected)}")


def shown(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return f"{len(value):,} bytes ({value[:8].hex()}...)"
    return repr(value)[:80]


# -- workloads ------------------------------------------------------------------


def latency(
    contestants: list, settings: Settings, call: Callable, expected: object, label: str
) -> dict[str, list[float]]:
    """Rounds of blocks of sequential `call(contestant)`; every sample by name."""
    samples: dict[str, list[float]] = {c.name: [] for c in contestants}
    for round_number in range(settings.rounds):
        progress(f"{label}: round {round_number + 1}/{settings.rounds}")
        for contestant in rotated(contestants, round_number):
            for _ in range(settings.block_warmup):
                check(call(contestant), expected, contestant)
            gc.collect()
            samples[contestant.name] += timed(lambda c=contestant: call(c), settings.calls)
    return samples


def burst(contestants: list, settings: Settings) -> dict[str, list[float]]:
    """Calls/s of each round's burst, by name."""
    rates: dict[str, list[float]] = {c.name: [] for c in contestants}
    for round_number in range(settings.burst_rounds):
        progress(f"burst of {settings.burst:,}: round {round_number + 1}/{settings.burst_rounds}")
        for contestant in rotated(contestants, round_number):
            gc.collect()
            rates[contestant.name].append(settings.burst / contestant.burst(settings.burst))
    return rates


@dataclass
class Sweep:
    round_trips: dict[str, dict[int, list[float]]]  # seconds, by name and size
    rates: dict[str, dict[int, list[float]]]  # payload bytes/s of each concurrent block


def sweep(contestants: list, settings: Settings) -> Sweep:
    data = os.urandom(max(settings.sizes))
    result = Sweep(
        {c.name: {size: [] for size in settings.sizes} for c in contestants},
        {c.name: {size: [] for size in settings.sizes} for c in contestants},
    )
    for round_number in range(settings.sweep_rounds):
        progress(f"payload sweep: round {round_number + 1}/{settings.sweep_rounds}")
        for size in settings.sizes:
            payload = data[:size]
            for contestant in rotated(contestants, round_number):
                sweep_block(contestant, payload, settings, result)
    return result


def sweep_block(contestant, payload: bytes, settings: Settings, result: Sweep) -> None:
    size = len(payload)
    check(contestant.echo(payload), payload, contestant)  # warm-up: buffers, page faults
    gc.collect()
    repeats = settings.sweep_calls if size <= MIB else settings.sweep_large_calls
    result.round_trips[contestant.name][size] += timed(lambda: contestant.echo(payload), repeats)
    seconds = contestant.echo_many(payload, settings.concurrency)
    result.rates[contestant.name][size].append(settings.concurrency * size / seconds)


@dataclass
class Run:
    contestants: list[str]  # those measured
    skipped: dict[str, str]  # and why
    noop: dict[str, list[float]]  # latency samples in seconds, by name
    echo: dict[str, list[float]]
    sweep: Sweep
    burst: dict[str, list[float]]  # calls/s of each round


# -- the report -----------------------------------------------------------------


def latency_table(samples: dict[str, list[float]]) -> list[str]:
    p50 = {name: percentile(values, 50) for name, values in samples.items()}
    rows = []
    for name, values in samples.items():
        p99 = percentile(values, 99)
        rows.append(
            [
                name,
                duration(p50[name]),
                duration(p99),
                ratio(p99, p50[name]),
                ratio(p50[name], p50.get(POOL)),
                ratio(p50[name], p50.get(ECHO)),
            ]
        )
    header = ["contestant", "p50", "p99", "p99 / p50", "p50 / pool", "p50 / grpc-echo"]
    return markdown_table(header, rows)


def burst_table(rates: dict[str, list[float]]) -> list[str]:
    medians = {name: statistics.median(values) for name, values in rates.items()}
    rows = [
        [
            name,
            f"{medians[name]:,.0f}",
            f"{min(values):,.0f}-{max(values):,.0f}",
            ratio(medians[name], medians.get(POOL)),
        ]
        for name, values in rates.items()
    ]
    return markdown_table(["contestant", "calls/s (median)", "min-max", "rate / pool"], rows)


def sweep_tables(result: Sweep, sizes: list[int]) -> tuple[list[str], list[str]]:
    names = list(result.round_trips)
    trips = {n: {s: statistics.median(v) for s, v in result.round_trips[n].items()} for n in names}
    rates = {n: {s: statistics.median(v) for s, v in result.rates[n].items()} for n in names}
    trip_rows, rate_rows = [], []
    for size in sizes:
        label = size_label(size)
        trip_rows.append(
            [label, *(duration(trips[n][size]) for n in names)]
            + [ratio(trips.get("shm", {}).get(size), trips.get("pipe", {}).get(size))]
        )
        rate_rows.append(
            [label, *(byte_rate(rates[n][size]) for n in names)]
            + [ratio(rates.get("shm", {}).get(size), rates.get("pipe", {}).get(size))]
        )
    header = ["payload", *names, "shm / pipe"]
    return markdown_table(header, trip_rows), markdown_table(header, rate_rows)


# -- the header -----------------------------------------------------------------


def environment() -> dict[str, str]:
    return {
        "commit": git_commit(),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pool start method": multiprocessing.get_start_method(),
        "gateway": binary(GATEWAY),
        "echo server": binary(ECHO_SERVER),
        "client": str(pathlib.Path(distribute_challenge.__file__).parent),
    }


def header(env: dict[str, str], loads: tuple[str, str], settings: Settings, run: Run) -> list[str]:
    contestants = ", ".join(run.contestants)
    lines = [
        f"`{command_line()}`",
        "",
        f"- commit {env['commit']}; {env['cpu']}, {env['cores']} cores; {env['kernel']}; "
        f"Python {env['python']} (pool start method: {env['pool start method']})",
        f"- gateway {env['gateway']}; echo server {env['echo server']}; client {env['client']}",
        f"- load average before {loads[0]}, after {loads[1]}",
        f"- contestants: {contestants} ({settings.workers} workers each for the gateways "
        f"and the pool; grpc-echo's no-op payload is {settings.noop_bytes} bytes)",
    ]
    lines += [f"- skipped: {name}: {reason}" for name, reason in run.skipped.items()]
    return lines


def report(settings: Settings, env: dict[str, str], loads: tuple[str, str], run: Run) -> str:
    samples = (
        f"{plural(settings.rounds * settings.calls, 'sequential call')} per contestant "
        f"({plural(settings.rounds, 'round')} of {settings.calls:,}, each block after "
        f"{plural(settings.block_warmup, 'warm-up call')}; {settings.warmup:,} more per "
        "contestant at the start)"
    )
    sweep_calls = f"{settings.sweep_calls} (up to 1 MiB) or {settings.sweep_large_calls} (larger)"
    rounds = plural(settings.sweep_rounds, "round")
    trips, rates = sweep_tables(run.sweep, settings.sizes)
    lines = header(env, loads, settings, run) + [
        "",
        f"No-op latency, {samples}:",
        "",
        *latency_table(run.noop),
        "",
        f"{size_label(settings.echo_bytes)} echo latency, {samples}:",
        "",
        *latency_table(run.echo),
        "",
        f"Echo round trip, median of {sweep_calls} sequential calls per size and round, {rounds}:",
        "",
        *trips,
        "",
        f"Echo throughput, {settings.concurrency} calls at once: payload bytes echoed per "
        f"second, median of {rounds}:",
        "",
        *rates,
        "",
        f"A burst of {settings.burst:,} no-op calls at once, "
        f"{plural(settings.burst_rounds, 'round')}:",
        "",
        *burst_table(run.burst),
        "",
        "Ratios of times (latency over the pool's or grpc-echo's p50, p99 over p50, shm over "
        "pipe per payload): smaller is better. Ratios of rates (burst over the pool's, shm's "
        "throughput over pipe's): larger is better.",
    ]
    return "\n".join(lines)


def write_json(path: pathlib.Path, settings, env, loads, run: Run) -> None:
    document = {
        "command": command_line(),
        "environment": env,
        "load_average": {"before": loads[0], "after": loads[1]},
        "settings": asdict(settings),
        "contestants": run.contestants,
        "skipped": run.skipped,
        "seconds": {
            "noop_latency": {name: summary(v) for name, v in run.noop.items()},
            "echo_latency": {name: summary(v) for name, v in run.echo.items()},
            "sweep_round_trip": {
                name: {str(size): summary(v) for size, v in by_size.items()}
                for name, by_size in run.sweep.round_trips.items()
            },
        },
        "sweep_bytes_per_second": {
            name: {str(size): v for size, v in by_size.items()}
            for name, by_size in run.sweep.rates.items()
        },
        "burst_calls_per_second": run.burst,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


# -- main -----------------------------------------------------------------------


def contestants_running(
    stack: contextlib.ExitStack, names: list[str], settings: Settings, skipped: dict[str, str]
) -> list:
    """Every contestant among `names`, started, in CONTESTANTS order."""
    found = {}
    if POOL in names:  # first: its processes fork before this one has gRPC threads
        executor = stack.enter_context(concurrent.futures.ProcessPoolExecutor(settings.workers))
        found[POOL] = Pool(executor, settings.workers)
    progress("starting the servers")
    servers = start_gateways(stack, names, settings.workers, skipped)
    echo_url = stack.enter_context(echo_server()) if ECHO in names else None
    runner = stack.enter_context(asyncio.Runner())  # one loop for every async call
    for name, server in servers.items():
        found[name] = Gateway(name, server, runner)
    if echo_url is not None:
        found[ECHO] = EchoServer(echo_url, runner, settings.noop_bytes)
        stack.callback(found[ECHO].close)
    return [found[name] for name in CONTESTANTS if name in found]


def measure(settings: Settings, names: list[str]) -> Run:
    skipped: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        contestants = contestants_running(stack, names, settings, skipped)
        progress("warming up")
        contestants = [c for c in contestants if warm_up(c, settings, skipped)]
        if not contestants:
            raise SystemExit(f"nothing to measure: {skipped}")
        data = os.urandom(settings.echo_bytes)
        return Run(
            contestants=[c.name for c in contestants],
            skipped=skipped,
            noop=latency(contestants, settings, lambda c: c.noop(), None, "no-op latency"),
            echo=latency(contestants, settings, lambda c: c.echo(data), data, "echo latency"),
            sweep=sweep(contestants, settings),
            burst=burst(contestants, settings),
        )


def main() -> None:
    options = arguments()
    settings = settings_from(options, Settings(), QUICK)
    load_before = load_average()
    run = measure(settings, options.contestants)
    loads = (load_before, load_average())
    env = environment()
    print(report(settings, env, loads, run))
    if options.json is not None:
        write_json(options.json, settings, env, loads, run)


if __name__ == "__main__":
    main()
