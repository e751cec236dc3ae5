"""Large payloads on every contestant in one run, interleaved: 64 MiB of bytes
and a 1 GiB numpy array through the gateway on each transport, a local
process pool, the bare gRPC hop and Ray's local cluster; the client's peak
memory for the array; and the small and medium payloads that a shared-memory
path for large ones must not slow down.

    cargo build --release && cargo build --release --example echo_server
    python3 -m venv /tmp/rayvenv && /tmp/rayvenv/bin/pip install ray numpy   # for Ray
    .venv/bin/python benches/python/large.py            # the figures (about 15 minutes)
    .venv/bin/python benches/python/large.py --quick    # a smoke run, under a minute, no Ray
    .venv/bin/python benches/python/large.py --json /tmp/large.json   # and a summary

Run it from a directory with no other ``worker_shim`` in it (e.g. ``/tmp``,
with the paths above made absolute): the workers run ``python -m
worker_shim``, which puts their working directory first on ``sys.path``.
Run it on an otherwise idle machine, for the figures and for memory: a 1 GiB
array sent inline through Python's gRPC stack (shm-inline, grpc-echo) takes
about 8 GiB in the client for a moment, and a trial of the array section
took the whole machine to nearly 20 GiB.

Contestants, all started once and kept running for the whole run:

- ``pipe``, ``shm``: the gateway (``--transport pipe|shm --workers 4``,
  ``--max-payload-bytes`` 3 GiB), through the public client API: the client
  may send large buffers through shared memory when it shares the gateway's
  host, which the caller does not see;
- ``shm-inline``: the shm gateway, the client with that path turned off
  (``compute_this(shared_memory_threshold=None)``), skipped (the output says
  why) where ``compute_this`` takes no such keyword;
- ``pool``: ``concurrent.futures.ProcessPoolExecutor(4)``, every worker
  process started before anything is measured;
- ``grpc-echo``: the bare tonic echo server (``examples/echo_server.rs``)
  called by the same Python gRPC stack with the payload as is (an array as
  its bytes, ``tobytes()`` then ``np.frombuffer``): the gRPC hop alone;
- ``ray``: Ray's local cluster (``ray.init(num_cpus=4)``, ``@ray.remote``
  functions, ``ray.get(f.remote(x))``). Ray lives in its own interpreter,
  ``$RAY_PYTHON`` (default ``/tmp/rayvenv/bin/python`` where it exists, or
  ``--ray-python``): a child process of that interpreter (this script's
  hidden ``_ray`` command) keeps the cluster for the whole run and times
  each block it is asked for over a pipe (a JSON line each way), so that its
  blocks interleave with the others'. Skipped, saying why, when it cannot
  start; ``--quick`` leaves it out unless ``--contestants`` names it.

Sections (``--sections``, default all), each in rounds; a round runs one
block per contestant, in an order rotated from round to round, so that the
machine's drift hits all alike:

1. ``echo``: 64 MiB of random ``bytes`` through ``echo(data) -> data``:
   sequential calls, median and p99 of the round trip;
2. ``array``: a 1 GiB float64 array (``np.arange``) through ``same(a) -> a``:
   the median round trip, after one untimed call per contestant;
3. ``sum``: ``np.sum`` of that array remotely, ``total(a)``, against
   ``np.sum(a)`` in this process, timed in the same rounds (a contestant of
   its own); grpc-echo cannot sum and sits it out;
4. ``rss``: the client's peak memory for one round trip of the array: per
   contestant a fresh child process (the hidden ``_rss`` command; Ray's is
   started by the ``_ray`` child, in its interpreter, and connects to its
   cluster as a second driver) makes one small call, creates the array,
   sends it, touches the result (``result.sum()``) and reports its
   ``VmHWM`` (``ru_maxrss`` would start at this process's peak: Linux
   carries it over ``execve``), as a multiple of the array;
5. ``sweep``: bytes echo at 1 KiB, 64 KiB, 256 KiB, 1 MiB and 4 MiB, median
   and p99 per contestant and size.

The functions are defined here, in ``__main__``, so they travel by value, as
users' functions do. Every result is checked (its length or shape and type,
and a few slices or values) and dropped before the next call; no more than
one large array is kept alive in this process at a time. The output is
Markdown, ready to paste into BENCHMARKS.md, with a header (command, commit,
machine, load average), the ratios and a table of the targets (64 MiB echo
at most Ray's time and half the pool's, the 1 GiB round trip under a second,
the remote sum within ``1.5 * local + 50 ms``, the client's peak RSS at most
2.2x the array, and shm no slower than shm-inline up to 1 MiB); progress goes
to stderr. A contestant whose call fails or answers wrongly leaves that
section (the output says why) and the run exits 1 once it has reported.
``$MYSTIC_GATEWAY_BIN`` and ``$MYSTIC_ECHO_SERVER_BIN`` pick other binaries;
``--help`` for every size and count.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ctypes
import gc
import inspect
import json
import math
import multiprocessing
import os
import pathlib
import platform
import random
import select
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from _servers import ECHO_SERVER, GATEWAY, echo_server, gateway
from harness import settings_from

try:  # not in Ray's interpreter, which runs only the `_ray` and `_rss ray` children
    import grpc
    from _servers import GRPCIO_OPTIONS
    from harness import (
        binary,
        command_line,
        cpu_model,
        duration,
        git_commit,
        load_average,
        markdown_table,
        memory_total,
        parse_size,
        parse_sizes,
        percentile,
        plural,
        progress,
        ratio,
        rotated,
        size_label,
        summary,
    )

    import distribute_challenge
    from distribute_challenge import compute_this
    from distribute_challenge._pb import gateway_pb2, gateway_pb2_grpc

    MISSING = None
except ModuleNotFoundError as missing:
    MISSING = missing

SCRIPT = pathlib.Path(__file__).resolve()
RAY_CHILD, RSS_CHILD = "_ray", "_rss"  # the hidden commands
GATEWAYS = ["pipe", "shm", "shm-inline"]
POOL, ECHO, RAY = "pool", "grpc-echo", "ray"
CONTESTANTS = [*GATEWAYS, POOL, ECHO, RAY]
SHARED_MEMORY_ON = ["pipe", "shm"]  # the client as it comes: the targets are theirs
SECTIONS = ["echo", "array", "sum", "rss", "sweep"]
KINDS = ["echo", "array", "sum"]  # of a call: bytes echoed, an array sent back, an array summed
LOCAL_SUM = "local np.sum"
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
CALL_TIMEOUT = 600.0  # seconds any one call may take
RAY_START_TIMEOUT = 300.0
DEFAULT_RAY_PYTHON = pathlib.Path("/tmp/rayvenv/bin/python")
# The targets the figures are judged by.
ECHO_OVER_RAY = 1.0
ECHO_OVER_POOL = 0.5
ARRAY_SECONDS = 1.0
SUM_FACTOR, SUM_SLACK = 1.5, 0.050  # remote <= 1.5 * local + 50 ms
RSS_OVER_ARRAY = 2.2
SMALL = MIB  # shm no slower than shm-inline up to this size
SMALL_OVER_INLINE = 1.0


def echo(data):
    return data


def same(a):
    return a


def total(a):
    return float(np.sum(a))


def nap(seconds):
    """Sleeps; numpy is imported where it runs (this function names it)."""
    time.sleep(seconds)
    return float(np.float64(seconds))


# -- settings -------------------------------------------------------------------


@dataclass
class Settings:
    workers: int = 4
    echo_bytes: int = 64 * MIB
    echo_rounds: int = 5
    echo_calls: int = 10  # timed calls per echo block
    array_bytes: int = GIB
    array_rounds: int = 5
    array_calls: int = 1  # timed round trips per array block
    sum_rounds: int = 5
    sum_calls: int = 2  # timed sums per block
    block_warmup: int = 1  # untimed calls at the start of each echo and sweep block
    sizes: list[int] = field(default_factory=lambda: [KIB, 64 * KIB, 256 * KIB, MIB, 4 * MIB])
    sweep_rounds: int = 5
    sweep_calls: int = 20  # timed calls per sweep block, sizes up to 1 MiB
    sweep_large_calls: int = 5  # the same above 1 MiB
    max_payload_bytes: int = 3 * GIB  # the gateways' --max-payload-bytes


QUICK = Settings(
    echo_bytes=4 * MIB,
    echo_rounds=1,
    echo_calls=3,
    array_bytes=16 * MIB,
    array_rounds=1,
    array_calls=2,
    sum_rounds=1,
    sum_calls=2,
    sizes=[KIB, 64 * KIB, MIB],
    sweep_rounds=1,
    sweep_calls=3,
    sweep_large_calls=2,
)


def count(text: str, least: int = 1) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"at least {least}, not {value}")
    return value


def names_of(choices: list[str]) -> Callable[[str], list[str]]:
    """A comma-separated list of some of `choices`."""

    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"not one of {', '.join(choices)}: {', '.join(unknown) or text!r}"
            )
        return names

    return parse


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, 1 round")
    parser.add_argument(
        "--contestants",
        nargs="+",
        type=names_of(CONTESTANTS),
        help=f"some of {', '.join(CONTESTANTS)}, comma- or space-separated "
        "(default: all; --quick: all but ray)",
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        type=names_of(SECTIONS),
        help=f"some of {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--json", type=pathlib.Path, help="also write a summary there")
    parser.add_argument(
        "--ray-python",
        type=pathlib.Path,
        help=f"the interpreter that has Ray (default $RAY_PYTHON, else {DEFAULT_RAY_PYTHON})",
    )
    flags = {
        "workers": (count, "workers of each gateway, of the pool and of Ray"),
        "echo-bytes": (parse_size, "payload of the echo section"),
        "echo-rounds": (count, "rounds of the echo section"),
        "echo-calls": (count, "timed calls per echo block"),
        "array-bytes": (parse_size, "size of the array (array, sum and rss sections)"),
        "array-rounds": (count, "rounds of the array section"),
        "array-calls": (count, "timed round trips per array block"),
        "sum-rounds": (count, "rounds of the sum section"),
        "sum-calls": (count, "timed sums per sum block"),
        "block-warmup": (
            lambda text: count(text, 0),
            "untimed calls at the start of each echo and sweep block",
        ),
        "sizes": (parse_sizes, "payloads of the sweep, comma-separated"),
        "sweep-rounds": (count, "rounds of the sweep"),
        "sweep-calls": (count, "timed calls per sweep block, sizes up to 1 MiB"),
        "sweep-large-calls": (count, "the same, sizes above 1 MiB"),
        "max-payload-bytes": (parse_size, "the gateways' --max-payload-bytes"),
    }
    for name, (kind, help_text) in flags.items():
        attribute = name.replace("-", "_")
        defaults = [shown_setting(getattr(s, attribute), name) for s in (Settings(), QUICK)]
        parser.add_argument(
            f"--{name}",
            type=kind,
            help=f"{help_text} (default {defaults[0]}, --quick {defaults[1]})",
        )
    return parser.parse_args()


def shown_setting(value: object, name: str) -> str:
    if "bytes" in name or name == "sizes":
        sizes = value if isinstance(value, list) else [value]
        return ",".join(size_label(size).replace(" ", "") for size in sizes)
    return str(value)


def flattened(lists: list[list[str]] | None) -> list[str] | None:
    return None if lists is None else list(dict.fromkeys(n for names in lists for n in names))


# -- payloads, checks, timing (in every interpreter, Ray's too) -----------------


class Payloads:
    """The payloads of one process, made once: random bytes per size, and one
    float64 ``np.arange`` at a time (another size replaces it)."""

    def __init__(self) -> None:
        self._bytes: dict[int, bytes] = {}
        self._array: np.ndarray | None = None

    def get(self, kind: str, size: int) -> object:
        if kind == "echo":
            if size not in self._bytes:
                self._bytes[size] = os.urandom(size)
            return self._bytes[size]
        if self._array is None or self._array.nbytes != array_length(size) * 8:
            self._array = None  # freed before the next one is made
            self._array = make_array(size)
        return self._array

    def release(self) -> None:
        """Frees the array."""
        self._array = None
        gc.collect()
        trim()


def array_length(nbytes: int) -> int:
    return max(nbytes // 8, 1)


def make_array(nbytes: int) -> np.ndarray:
    return np.arange(array_length(nbytes), dtype=np.float64)


def spots(length: int, width: int) -> list[int]:
    """Where to compare `width` items of something `length` long: both ends,
    the middle, and a few places drawn from the length."""
    last = max(length - width, 0)
    drawn = random.Random(length).sample(range(last + 1), min(4, last + 1))
    return sorted({0, last // 3, last // 2, last, *drawn})


def check_bytes(result: object, data: bytes) -> None:
    if not isinstance(result, bytes | bytearray | memoryview) or len(result) != len(data):
        raise AssertionError(f"answered {shown(result)}, not {len(data):,} bytes")
    for start in spots(len(data), 64):
        if bytes(result[start : start + 64]) != data[start : start + 64]:
            raise AssertionError(f"answered other bytes at offset {start:,}")


def check_array(result: object, a: np.ndarray) -> None:
    if not isinstance(result, np.ndarray) or result.shape != a.shape or result.dtype != a.dtype:
        raise AssertionError(f"answered {shown(result)}, not a {a.dtype} array of {a.shape}")
    for index in spots(a.size, 1):
        if result[index] != a[index]:
            raise AssertionError(f"answered {result[index]!r} at [{index:,}], not {a[index]!r}")


def check_sum(result: object, a: np.ndarray) -> None:
    expected = a.size * (a.size - 1) / 2  # of an arange
    if not isinstance(result, float | np.floating) or not math.isclose(
        result, expected, rel_tol=1e-9
    ):
        raise AssertionError(f"summed to {shown(result)}, not {expected!r}")


CHECKS: dict[str, Callable[[object, object], None]] = {
    "echo": check_bytes,
    "array": check_array,
    "sum": check_sum,
}


def shown(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{len(value):,} bytes ({bytes(value[:8]).hex()}...)"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of {value.shape}"
    return repr(value)[:80]


def time_calls(
    call: Callable[[object], object], payload: object, kind: str, calls: int, warmup: int
) -> list[float]:
    """Seconds of each of `calls` sequential `call(payload)`, after `warmup`
    untimed ones; every result is checked, then dropped before the next call,
    and the memory freed given back at the end."""
    check = CHECKS[kind]
    for _ in range(warmup):
        check(call(payload), payload)
    gc.collect()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        result = call(payload)
        samples.append(time.perf_counter() - start)
        check(result, payload)
        del result
    trim()
    return samples


def trim() -> None:
    """Hands freed heap memory back to the system (glibc's ``malloc_trim``):
    the gRPC stack takes a large message in many small blocks, which stay in
    the process, freed, after the call, gigabytes of them for a 1 GiB one."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def rss_figures(name: str, address: str, nbytes: int, workers: int) -> dict:
    """One round trip of an array of `nbytes` through `name` at `address`, by
    a fresh `_rss` child of this interpreter; its figures."""
    command = [sys.executable, str(SCRIPT), RSS_CHILD, name, address, str(nbytes), str(workers)]
    child = subprocess.run(command, capture_output=True, text=True, timeout=3 * CALL_TIMEOUT)
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        tail = " / ".join(child.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"the child exited {child.returncode}: {tail}")
    figures = json.loads(lines[-1])
    if "error" in figures:
        raise RuntimeError(figures["error"])
    return figures


def peak_kib() -> int:
    """This process's ``VmHWM``. (``burst.status_kib`` reads it too, but that
    module needs the client package, which Ray's interpreter has not.)"""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def answer_channel():
    """The children's answers go to what stdout was; anything else written to
    stdout (Ray's, a library's) goes to stderr, the parent's log."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return answers


def describe(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:400]


# -- the calls of each kind of contestant ---------------------------------------
#
# Each maps a kind of call (KINDS) to one call of it: `call(payload) -> result`.


def gateway_calls(server: str, inline: bool) -> dict[str, Callable]:
    options: dict[str, object] = {"server": server, "timeout": CALL_TIMEOUT}
    if inline:
        options["shared_memory_threshold"] = None
    remote = compute_this(**options)
    echoed, sent_back, summed = remote(echo), remote(same), remote(total)
    return {
        "echo": lambda data: echoed(data).run(),
        "array": lambda a: sent_back(a).run(),
        "sum": lambda a: summed(a).run(),
    }


def warm_workers(server: str, workers: int) -> None:
    """Every worker of the gateway at `server` runs a call, and so has numpy
    imported: else a worker's first call that unpickles an array would pay for
    the import."""
    napping = compute_this(server=server, timeout=CALL_TIMEOUT)(nap)
    naps = [0.3] * workers  # at once: each on a worker of its own
    if list(napping.map(naps)) != naps:
        raise AssertionError(f"{server}: the naps answered other seconds")


def inline_option_missing() -> str | None:
    """Why shm-inline cannot run, or None if it can."""
    if "shared_memory_threshold" in inspect.signature(compute_this).parameters:
        return None
    return (
        "`compute_this` takes no `shared_memory_threshold` yet (this client sends every "
        "payload inline: shm-inline would be shm)"
    )


def warmed_pool(
    stack: contextlib.ExitStack, workers: int
) -> concurrent.futures.ProcessPoolExecutor:
    """A pool with every worker process started."""
    pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(workers))
    concurrent.futures.wait([pool.submit(time.sleep, 0.2) for _ in range(workers)])
    return pool


def pool_calls(pool: concurrent.futures.ProcessPoolExecutor) -> dict[str, Callable]:
    return {
        kind: lambda payload, function=function: pool.submit(function, payload).result(CALL_TIMEOUT)
        for kind, function in (("echo", echo), ("array", same), ("sum", total))
    }


def echo_server_calls(stack: contextlib.ExitStack, url: str) -> dict[str, Callable]:
    """The bare echo server through the generated stubs; no sum."""
    channel = grpc.insecure_channel(url.removeprefix("grpc://"), options=GRPCIO_OPTIONS)
    stack.callback(channel.close)
    stub = gateway_pb2_grpc.GatewayStub(channel)

    def echoed(data: bytes) -> bytes:
        request = gateway_pb2.ExecuteRequest(payload=data)
        return stub.Execute(request, timeout=CALL_TIMEOUT).payload

    def sent_back(a: np.ndarray) -> np.ndarray:
        return np.frombuffer(echoed(a.tobytes()), dtype=a.dtype).reshape(a.shape)

    return {"echo": echoed, "array": sent_back}


def ray_calls(ray, workers: int) -> dict[str, Callable]:
    """Ray's, with every worker process started."""
    napping, echoed, sent_back, summed = map(ray.remote, (nap, echo, same, total))
    ray.get([napping.remote(0.2) for _ in range(workers)], timeout=RAY_START_TIMEOUT)
    return {
        kind: lambda payload, remote=remote: ray.get(remote.remote(payload), timeout=CALL_TIMEOUT)
        for kind, remote in (("echo", echoed), ("array", sent_back), ("sum", summed))
    }


# -- the contestants ----------------------------------------------------------------
#
# Each has a `name`, the `kinds` of call it makes, `block(kind, size, calls,
# warmup)`: the seconds of each of `calls` timed calls of that kind on a
# payload of `size` bytes, checked; and `rss(nbytes, workers)`: the figures of
# an `_rss` child's round trip of an array of `nbytes`.


@dataclass
class Local:
    """A contestant called from this process, on this process's payloads."""

    name: str
    calls: dict[str, Callable]
    payloads: Payloads
    address: str = "-"  # where its `_rss` child calls

    @property
    def kinds(self) -> list[str]:
        return list(self.calls)

    def block(self, kind: str, size: int, calls: int, warmup: int) -> list[float]:
        payload = self.payloads.get(kind, size)
        return time_calls(self.calls[kind], payload, kind, calls, warmup)

    def rss(self, nbytes: int, workers: int) -> dict:
        return rss_figures(self.name, self.address, nbytes, workers)


class RayChild:
    """Ray's cluster, in the `_ray` child: it times each block it is sent, on
    payloads of its own, and starts the `_rss` child itself, which then
    connects to its cluster as Ray's drivers on a node do."""

    name = RAY
    kinds = KINDS

    def __init__(self, process: subprocess.Popen, log, info: dict) -> None:
        self._process = process
        self._log = log
        self.info = info

    def block(self, kind: str, size: int, calls: int, warmup: int) -> list[float]:
        request = {"kind": kind, "size": size, "calls": calls, "warmup": warmup}
        return self._ask(request)["seconds"]

    def rss(self, nbytes: int, workers: int) -> dict:
        return self._ask({"kind": "rss", "size": nbytes, "workers": workers})["figures"]

    def release(self) -> None:
        self._ask({"kind": "release"})

    def _ask(self, request: dict) -> dict:
        try:
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        except OSError:  # its end of the pipe closed
            line = ""
        if not line:
            raise RuntimeError(f"the Ray child is gone: {log_tail(self._log)}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer


def log_tail(log, lines: int = 5) -> str:
    log.flush()
    log.seek(0)
    text = log.read().decode(errors="replace").strip().splitlines()
    return " / ".join(line.strip() for line in text[-lines:]) or "(no output)"


@contextlib.contextmanager
def ray_process(python: pathlib.Path, workers: int):
    """The `_ray` child until the block ends, and its log (its stderr)."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [str(python), str(SCRIPT), RAY_CHILD, str(workers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            yield process, log
        finally:
            with contextlib.suppress(OSError):
                process.stdin.close()  # the child shuts Ray down and exits
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def ray_ready(process: subprocess.Popen, log) -> dict | str:
    """The child's first answer (what it runs), or why it did not come."""
    ready, _, _ = select.select([process.stdout], [], [], RAY_START_TIMEOUT)
    line = process.stdout.readline() if ready else ""
    try:
        info = json.loads(line)
    except ValueError:
        info = {}
    if "address" not in info:
        if process.poll() is None:
            process.kill()
        return f"its child did not start: {info.get('error') or log_tail(log)}"
    return info


def ray_python(options: argparse.Namespace) -> pathlib.Path | None:
    path = options.ray_python or os.environ.get("RAY_PYTHON")
    if path:
        return pathlib.Path(path)
    return DEFAULT_RAY_PYTHON if DEFAULT_RAY_PYTHON.exists() else None


def contestants_running(
    stack: contextlib.ExitStack,
    names: list[str],
    settings: Settings,
    payloads: Payloads,
    ray_interpreter: pathlib.Path | None,
    skipped: dict[str, str],
) -> list:
    """Every contestant among `names` that can run, started, in CONTESTANTS
    order; the others go to `skipped`, with the reason."""
    found: dict[str, object] = {}
    if POOL in names:  # first: its processes fork before this one has gRPC threads
        found[POOL] = Local(POOL, pool_calls(warmed_pool(stack, settings.workers)), payloads)
    ray = None
    if RAY in names:
        if ray_interpreter is None or not ray_interpreter.exists():
            skipped[RAY] = (
                f"no interpreter with Ray ({ray_interpreter or DEFAULT_RAY_PYTHON} does not "
                "exist; set $RAY_PYTHON, or `python3 -m venv /tmp/rayvenv && "
                "/tmp/rayvenv/bin/pip install ray numpy`)"
            )
        else:
            progress(f"starting Ray ({ray_interpreter})")
            ray = stack.enter_context(ray_process(ray_interpreter, settings.workers))
    progress("starting the servers")
    flags = ("--max-payload-bytes", str(settings.max_payload_bytes))
    if "shm-inline" in names and (reason := inline_option_missing()):
        skipped["shm-inline"] = reason
    servers = {}
    wanted = [name for name in GATEWAYS if name in names and name not in skipped]
    for transport in ("pipe", "shm"):
        if transport in wanted or (transport == "shm" and "shm-inline" in wanted):
            servers[transport] = stack.enter_context(gateway(transport, settings.workers, *flags))
            warm_workers(servers[transport], settings.workers)
    for name in wanted:
        server = servers["shm" if name == "shm-inline" else name]
        found[name] = Local(name, gateway_calls(server, name == "shm-inline"), payloads, server)
    if ECHO in names:
        if ECHO_SERVER.exists():
            url = stack.enter_context(echo_server())
            found[ECHO] = Local(ECHO, echo_server_calls(stack, url), payloads, url)
        else:
            skipped[ECHO] = (
                f"{ECHO_SERVER} is missing (`cargo build --release --example echo_server`)"
            )
    if ray is not None:
        info = ray_ready(*ray)
        if isinstance(info, str):
            skipped[RAY] = info
        else:
            found[RAY] = RayChild(*ray, info)
    return [found[name] for name in CONTESTANTS if name in found]


# -- the sections -----------------------------------------------------------------


@dataclass
class Run:
    contestants: list[str]  # those measured
    sections: list[str]
    skipped: dict[str, str]  # and why
    failures: dict[str, str] = field(default_factory=dict)  # "name, section": the error
    ray: dict = field(default_factory=dict)  # what the Ray child runs
    echo: dict[str, list[float]] = field(default_factory=dict)  # seconds, by name
    array: dict[str, list[float]] = field(default_factory=dict)
    sum: dict[str, list[float]] = field(default_factory=dict)  # LOCAL_SUM among them
    rss: dict[str, dict] = field(default_factory=dict)  # the `_rss` child's figures, by name
    sweep: dict[str, dict[int, list[float]]] = field(default_factory=dict)  # by name and size


class Section:
    """Blocks of one section: a contestant whose block fails leaves it, its
    samples dropped, the error in the run's failures."""

    def __init__(self, label: str, kind: str, contestants: list, run: Run) -> None:
        self.label = label
        self.kind = kind
        self.running = [c for c in contestants if kind in c.kinds]
        self.samples: dict[str, list[float]] = {c.name: [] for c in self.running}
        self._run = run

    def block(self, contestant, size: int, calls: int, warmup: int) -> list[float] | None:
        if contestant not in self.running:
            return None
        try:
            seconds = contestant.block(self.kind, size, calls, warmup)
        except Exception as error:
            self._run.failures[f"{contestant.name}, {self.label}"] = describe(error)
            progress(f"{contestant.name} failed: {describe(error)}")
            self.running.remove(contestant)
            return None
        self.samples[contestant.name] += seconds
        return seconds

    def measured(self) -> dict[str, list[float]]:
        return {c.name: self.samples[c.name] for c in self.running}


def rounds_of(
    section: Section, size: int, rounds: int, calls: int, warmup: int, first: int = 0
) -> dict[str, list[float]]:
    """`first` untimed calls per contestant, then rounds of blocks."""
    if first:
        for contestant in list(section.running):
            progress(f"{section.label}: warming up {contestant.name}")
            section.block(contestant, size, 0, first)
    for round_number in range(rounds):
        for contestant in rotated(list(section.running), round_number):
            progress(f"{section.label}: round {round_number + 1}/{rounds}, {contestant.name}")
            section.block(contestant, size, calls, warmup)
    return section.measured()


def rss(contestants: list, settings: Settings, run: Run) -> None:
    label = f"peak RSS of a {size_label(settings.array_bytes)} round trip"
    for contestant in contestants:
        progress(f"{label}: {contestant.name}")
        try:
            run.rss[contestant.name] = contestant.rss(settings.array_bytes, settings.workers)
        except Exception as error:
            run.failures[f"{contestant.name}, {label}"] = describe(error)
            progress(f"{contestant.name} failed: {describe(error)}")


def sweep(contestants: list, settings: Settings, run: Run) -> None:
    section = Section("sweep", "echo", contestants, run)
    by_size: dict[str, dict[int, list[float]]] = {c.name: {} for c in section.running}
    for round_number in range(settings.sweep_rounds):
        progress(f"sweep: round {round_number + 1}/{settings.sweep_rounds}")
        for size in settings.sizes:
            calls = settings.sweep_calls if size <= MIB else settings.sweep_large_calls
            for contestant in rotated(list(section.running), round_number):
                seconds = section.block(contestant, size, calls, settings.block_warmup)
                if seconds is not None:
                    by_size[contestant.name].setdefault(size, []).extend(seconds)
    run.sweep = {c.name: by_size[c.name] for c in section.running}


def measure(
    settings: Settings, names: list[str], sections: list[str], ray_interpreter, skipped
) -> Run:
    payloads = Payloads()
    with contextlib.ExitStack() as stack:
        contestants = contestants_running(
            stack, names, settings, payloads, ray_interpreter, skipped
        )
        if not contestants:
            raise SystemExit(f"nothing to measure: {skipped}")
        run = Run([c.name for c in contestants], sections, skipped)
        ray = next((c for c in contestants if c.name == RAY), None)
        if ray is not None:
            run.ray = ray.info
        if "echo" in sections:
            echo_label = f"{size_label(settings.echo_bytes)} echo"
            run.echo = rounds_of(
                Section(echo_label, "echo", contestants, run),
                settings.echo_bytes,
                settings.echo_rounds,
                settings.echo_calls,
                settings.block_warmup,
            )
        array_label = f"{size_label(settings.array_bytes)} array"
        if "array" in sections:
            run.array = rounds_of(
                Section(f"{array_label} round trip", "array", contestants, run),
                settings.array_bytes,
                settings.array_rounds,
                settings.array_calls,
                0,
                first=1,
            )
        if "sum" in sections:
            local = Local(LOCAL_SUM, {"sum": np.sum}, payloads)
            run.sum = rounds_of(
                Section(f"np.sum of the {array_label}", "sum", [local, *contestants], run),
                settings.array_bytes,
                settings.sum_rounds,
                settings.sum_calls,
                0,
                first=1,
            )
        payloads.release()  # no large array in this process or Ray's from here on
        if ray is not None:
            with contextlib.suppress(RuntimeError):  # a child gone fails its next block too
                ray.release()
        if "rss" in sections:
            rss(contestants, settings, run)
        if "sweep" in sections:
            sweep(contestants, settings, run)
        progress("stopping the contestants")
    return run


# -- the children -------------------------------------------------------------------


def ray_child(workers: int) -> None:
    """The `_ray` command: Ray's cluster for the whole run. It answers a JSON
    line with what it runs, then one per request (stdin, a JSON line each): a
    block (kind, size, calls, warmup), answered with the seconds of each timed
    call; `rss` (size, workers), with the `_rss` child's figures; `release`,
    which frees its array; or the error. It ends at the end of its input."""
    answers = answer_channel()
    try:
        started = time.perf_counter()
        import ray

        imported = time.perf_counter() - started
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        initialised = time.perf_counter() - started - imported
        calls = ray_calls(ray, workers)
    except Exception as error:
        answers.write(json.dumps({"error": describe(error)}) + "\n")
        raise
    info = {
        "ray": ray.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "interpreter": sys.executable,
        "import_seconds": imported,
        "init_seconds": initialised,
        "address": ray.get_runtime_context().gcs_address,
        "object_store_bytes": ray.cluster_resources().get("object_store_memory"),
    }
    answers.write(json.dumps(info) + "\n")
    payloads = Payloads()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["kind"] == "release":
                payloads.release()
                answer: dict = {"released": True}
            elif request["kind"] == "rss":
                address = info["address"]
                figures = rss_figures(RAY, address, request["size"], request["workers"])
                answer = {"figures": figures}
            else:
                payload = payloads.get(request["kind"], request["size"])
                seconds = time_calls(
                    calls[request["kind"]],
                    payload,
                    request["kind"],
                    request["calls"],
                    request["warmup"],
                )
                del payload
                answer = {"seconds": seconds}
        except Exception as error:
            answer = {"error": describe(error)}
        answers.write(json.dumps(answer) + "\n")
    ray.shutdown()


def rss_child(name: str, address: str, nbytes: int, workers: int) -> None:
    """The `_rss` command: one round trip of an array of `nbytes` through
    `name` at `address`, after a small one; prints its figures as JSON."""
    answers = answer_channel()
    with contextlib.ExitStack() as stack:
        try:
            call = rss_round_trip(stack, name, address, workers)
            small = make_array(64 * KIB)
            check_array(call(small), small)  # the channel up, the function known
            del small
            gc.collect()
            before = peak_kib()
            a = make_array(nbytes)
            start = time.perf_counter()
            result = call(a)
            seconds = time.perf_counter() - start
            check_array(result, a)
            result.sum()  # every page of the result touched
            del result, a
            figures: dict = {
                "before_kib": before,
                "peak_kib": peak_kib(),
                "seconds": seconds,
                "array_bytes": array_length(nbytes) * 8,
            }
        except Exception as error:
            figures = {"error": describe(error)}
        answers.write(json.dumps(figures) + "\n")


def rss_round_trip(stack: contextlib.ExitStack, name: str, address: str, workers: int):
    if name == RAY:
        import ray

        ray.init(address=address, log_to_driver=False)
        stack.callback(ray.shutdown)
        return ray_calls(ray, 1)["array"]
    if name == POOL:
        return pool_calls(warmed_pool(stack, workers))["array"]
    if name == ECHO:
        return echo_server_calls(stack, address)["array"]
    return gateway_calls(address, name == "shm-inline")["array"]


# -- the report -------------------------------------------------------------------


def median_of(samples: dict[str, list[float]], name: str) -> float | None:
    values = samples.get(name)
    return statistics.median(values) if values else None


def spread(values: list[float]) -> str:
    return f"{duration(min(values))}-{duration(max(values))}"


def times_table(samples: dict[str, list[float]], tails: bool) -> list[str]:
    """Per contestant: the median (and the p99, with `tails`, else min-max),
    and the median's ratios to the pool's, Ray's and grpc-echo's."""
    rows = []
    bases = [b for b in (POOL, RAY, ECHO) if b in samples]
    for name, values in samples.items():
        median = statistics.median(values)
        row = [name, duration(median)]
        if tails:
            p99 = percentile(values, 99)
            row += [duration(p99), ratio(p99, median)]
        else:
            row.append(spread(values))
        row += [ratio(median, median_of(samples, base)) for base in bases]
        rows.append(row)
    header = ["contestant", "median"]
    header += ["p99", "p99 / median"] if tails else ["min-max"]
    header += [f"median / {base}" for base in bases]
    return markdown_table(header, rows)


def sum_bound(samples: dict[str, list[float]]) -> float | None:
    local = median_of(samples, LOCAL_SUM)
    return None if local is None else SUM_FACTOR * local + SUM_SLACK


def sum_table(samples: dict[str, list[float]]) -> list[str]:
    local, bound = median_of(samples, LOCAL_SUM), sum_bound(samples)
    rows = []
    for name, values in samples.items():
        median = statistics.median(values)
        met = "" if name == LOCAL_SUM or bound is None else yes_no(median <= bound)
        rows.append([name, duration(median), spread(values), ratio(median, local), met])
    bound_label = f"<= {SUM_FACTOR:g} * local + {SUM_SLACK * 1000:.0f} ms"
    if bound is not None:
        bound_label += f" ({duration(bound)})"
    return markdown_table(["contestant", "median", "min-max", "/ local", bound_label], rows)


def mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


def rss_table(figures: dict[str, dict]) -> list[str]:
    rows = []
    for name, found in figures.items():
        size_kib = found["array_bytes"] / KIB
        rows.append(
            [
                name,
                mib(found["before_kib"]),
                mib(found["peak_kib"]),
                f"{found['peak_kib'] / size_kib:.2f}x",
                f"{(found['peak_kib'] - found['before_kib']) / size_kib:.2f}x",
                duration(found["seconds"]),
            ]
        )
    header = ["contestant", "VmHWM before", "VmHWM after", "after / array"]
    header += ["(after - before) / array", "round trip"]
    return markdown_table(header, rows)


def sweep_tables(by_name: dict[str, dict[int, list[float]]], sizes: list[int]) -> list[str]:
    """Two tables, payload by contestant: the medians, then the p99s, each
    with shm over shm-inline."""
    names = list(by_name)
    lines = []
    for title, figure in (
        ("median", statistics.median),
        ("p99", lambda values: percentile(values, 99)),
    ):
        rows = []
        for size in sizes:
            at = {n: figure(by_name[n][size]) for n in names if by_name[n].get(size)}
            row = [size_label(size), *(duration(at[n]) if n in at else "-" for n in names)]
            rows.append([*row, ratio(at.get("shm"), at.get("shm-inline"))])
        if lines:
            lines += ["", f"The same, {title}:", ""]
        lines += markdown_table(["payload", *names, "shm / shm-inline"], rows)
    return lines


@dataclass
class Target:
    what: str
    figures: dict[str, str]  # by contestant, shown
    met: bool | None  # None: nothing to judge it by


def judged(passes: dict[str, bool]) -> bool | None:
    """Met when every contestant with the shared-memory path on that was
    measured passes."""
    mine = [passes[name] for name in SHARED_MEMORY_ON if name in passes]
    return all(mine) if mine else None


def ratio_target(what: str, samples, base: str, limit: float) -> Target:
    base_median = median_of(samples, base)
    figures, passes = {}, {}
    for name in GATEWAYS:
        median = median_of(samples, name)
        if median is not None and base_median:
            figures[name] = ratio(median, base_median)
            passes[name] = median / base_median <= limit
    return Target(what, figures, judged(passes))


def targets(run: Run, settings: Settings) -> list[Target]:
    found = []
    echo_label, array_label = size_label(settings.echo_bytes), size_label(settings.array_bytes)
    if run.echo:
        found.append(
            ratio_target(
                f"{echo_label} echo: median / ray <= {ECHO_OVER_RAY:.2f}x",
                run.echo,
                RAY,
                ECHO_OVER_RAY,
            )
        )
        found.append(
            ratio_target(
                f"{echo_label} echo: median / pool <= {ECHO_OVER_POOL:.2f}x",
                run.echo,
                POOL,
                ECHO_OVER_POOL,
            )
        )
    if run.array:
        medians = {n: median_of(run.array, n) for n in GATEWAYS if n in run.array}
        found.append(
            Target(
                f"{array_label} array round trip: median < {ARRAY_SECONDS:g} s",
                {n: duration(m) for n, m in medians.items()},
                judged({n: m < ARRAY_SECONDS for n, m in medians.items()}),
            )
        )
    bound = sum_bound(run.sum)
    if bound is not None:
        medians = {n: median_of(run.sum, n) for n in GATEWAYS if n in run.sum}
        found.append(
            Target(
                f"np.sum of the {array_label} array: remote <= {SUM_FACTOR:g} * local "
                f"+ {SUM_SLACK * 1000:.0f} ms ({duration(bound)})",
                {n: duration(m) for n, m in medians.items()},
                judged({n: m <= bound for n, m in medians.items()}),
            )
        )
    if run.rss:
        over = {
            n: f["peak_kib"] * KIB / f["array_bytes"] for n, f in run.rss.items() if n in GATEWAYS
        }
        found.append(
            Target(
                f"client peak RSS, {array_label} round trip: <= {RSS_OVER_ARRAY:g}x the array",
                {n: f"{v:.2f}x" for n, v in over.items()},
                judged({n: v <= RSS_OVER_ARRAY for n, v in over.items()}),
            )
        )
    if run.sweep:
        worst = worst_small_ratio(run.sweep)
        found.append(
            Target(
                f"echo up to {size_label(SMALL)}: shm / shm-inline median <= "
                f"{SMALL_OVER_INLINE:.2f}x (the worst size)",
                {} if worst is None else {"shm": f"{worst:.2f}x"},
                None if worst is None else worst <= SMALL_OVER_INLINE,
            )
        )
    return found


def worst_small_ratio(by_name: dict[str, dict[int, list[float]]]) -> float | None:
    shm, inline = by_name.get("shm", {}), by_name.get("shm-inline", {})
    ratios = [
        statistics.median(shm[size]) / statistics.median(inline[size])
        for size in shm
        if size <= SMALL and shm[size] and inline.get(size)
    ]
    return max(ratios) if ratios else None


def yes_no(met: bool | None) -> str:
    return "-" if met is None else "yes" if met else "**no**"


def targets_table(found: list[Target]) -> list[str]:
    rows = [
        [t.what, *(t.figures.get(name, "-") for name in GATEWAYS), yes_no(t.met)] for t in found
    ]
    return markdown_table(["target", *GATEWAYS, "met"], rows)


def environment() -> dict[str, str]:
    return {
        "commit": git_commit(),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "ram": memory_total(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pool start method": multiprocessing.get_start_method(),
        "gateway": binary(GATEWAY),
        "echo server": binary(ECHO_SERVER),
        "client": str(pathlib.Path(distribute_challenge.__file__).parent),
    }


def this_command() -> str:
    ray = os.environ.get("RAY_PYTHON")
    command = command_line("large.py")
    return f"RAY_PYTHON={shlex.quote(ray)} {command}" if ray else command


def header(env: dict[str, str], loads: tuple[str, str], settings: Settings, run: Run) -> list[str]:
    lines = [
        f"`{this_command()}`",
        "",
        f"- commit {env['commit']}; {env['cpu']}, {env['cores']} cores, {env['ram']}; "
        f"{env['kernel']}; Python {env['python']}, numpy {env['numpy']} "
        f"(pool start method: {env['pool start method']})",
        f"- gateway {env['gateway']}; echo server {env['echo server']}; client {env['client']}",
    ]
    if run.ray:
        store = run.ray.get("object_store_bytes")
        lines.append(
            f"- Ray {run.ray['ray']} (numpy {run.ray['numpy']}, Python {run.ray['python']}) in "
            f"{run.ray['interpreter']}: `import ray` {run.ray['import_seconds']:.2f} s, "
            f"`ray.init` {run.ray['init_seconds']:.2f} s"
            + (f", object store {store / GIB:.1f} GiB" if store else "")
        )
    lines += [
        f"- load average before {loads[0]}, after {loads[1]}",
        f"- contestants: {', '.join(run.contestants)} ({settings.workers} workers each for the "
        f"gateways, the pool and Ray; the gateways with --max-payload-bytes "
        f"{settings.max_payload_bytes:,}); sections: {', '.join(run.sections)}",
    ]
    lines += [f"- skipped: {name}: {reason}" for name, reason in run.skipped.items()]
    lines += [f"- **failed**: {where}: {error}" for where, error in run.failures.items()]
    return lines


def report(settings: Settings, env: dict[str, str], loads: tuple[str, str], run: Run) -> str:
    lines = header(env, loads, settings, run)
    echo_label, array_label = size_label(settings.echo_bytes), size_label(settings.array_bytes)
    if run.echo:
        lines += [
            "",
            f"{echo_label} bytes echo, round trip of sequential calls: "
            f"{plural(settings.echo_rounds, 'round')} of {settings.echo_calls} per contestant, "
            f"each block after {plural(settings.block_warmup, 'untimed call')}:",
            "",
            *times_table(run.echo, tails=True),
        ]
    if run.array:
        lines += [
            "",
            f"{array_label} float64 array round trip (`same(a) -> a`): "
            f"{plural(settings.array_rounds, 'round')} of {settings.array_calls} per "
            "contestant, after one untimed call (grpc-echo: the array's bytes, "
            "`tobytes()` then `np.frombuffer`):",
            "",
            *times_table(run.array, tails=False),
        ]
    if run.sum:
        lines += [
            "",
            f"np.sum of the {array_label} array, remote (`total(a)`) and in this process "
            f"({LOCAL_SUM}), in the same rounds: {plural(settings.sum_rounds, 'round')} of "
            f"{settings.sum_calls} per contestant, after one untimed call (grpc-echo cannot "
            "sum):",
            "",
            *sum_table(run.sum),
        ]
    if run.rss:
        lines += [
            "",
            f"Client peak RSS for one {array_label} round trip, each in a fresh child "
            "process: its `VmHWM` after a small call, and after it made the array, sent it "
            "and touched the result (`result.sum()`), over the array's size (the "
            "interpreter's own tens of MiB are in the peak too: they weigh on small arrays):",
            "",
            *rss_table(run.rss),
        ]
    if run.sweep:
        lines += [
            "",
            f"Small and medium bytes echo, median of sequential calls per size: "
            f"{plural(settings.sweep_rounds, 'round')} of {settings.sweep_calls} (up to 1 MiB) "
            f"or {settings.sweep_large_calls} (larger) per contestant, each block after "
            f"{plural(settings.block_warmup, 'untimed call')}:",
            "",
            *sweep_tables(run.sweep, settings.sizes),
        ]
    found = targets(run, settings)
    if found:
        lines += [
            "",
            "Targets (met: by every contestant measured among "
            f"{' and '.join(SHARED_MEMORY_ON)}, the client as it comes; shm-inline, with "
            "its shared-memory path off, for reference):",
            "",
            *targets_table(found),
        ]
    lines += ["", "Ratios of times: smaller is better."]
    return "\n".join(lines)


def write_json(path: pathlib.Path, settings, env, loads, run: Run) -> None:
    def summaries(samples: dict[str, list[float]]) -> dict:
        return {name: summary(values) for name, values in samples.items()}

    document = {
        "command": this_command(),
        "environment": env,
        "load_average": {"before": loads[0], "after": loads[1]},
        "settings": asdict(settings),
        "contestants": run.contestants,
        "sections": run.sections,
        "skipped": run.skipped,
        "failures": run.failures,
        "ray": run.ray,
        "seconds": {
            "echo": summaries(run.echo),
            "array": summaries(run.array),
            "sum": summaries(run.sum),
            "sweep": {
                name: {str(size): summary(v) for size, v in by_size.items()}
                for name, by_size in run.sweep.items()
            },
        },
        "rss": run.rss,
        "targets": [asdict(t) for t in targets(run, settings)],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


# -- main -------------------------------------------------------------------------


def main() -> None:
    command = sys.argv[1:2]
    if command == [RAY_CHILD] and len(sys.argv) == 3:
        ray_child(int(sys.argv[2]))
        return
    if command == [RSS_CHILD] and len(sys.argv) == 6:
        rss_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    if MISSING is not None:
        sys.exit(f"{sys.executable} lacks what the benchmark needs: {MISSING}")
    options = arguments()
    settings = settings_from(options, Settings(), QUICK)
    skipped: dict[str, str] = {}
    names = flattened(options.contestants)
    if names is None:
        names = [n for n in CONTESTANTS if n != RAY] if options.quick else CONTESTANTS
        if options.quick:
            skipped[RAY] = "--quick leaves it out (name it in --contestants to run it)"
    sections = flattened(options.sections) or SECTIONS
    sections = [s for s in SECTIONS if s in sections]
    if not GATEWAY.exists() and any(n in GATEWAYS for n in names):
        sys.exit(f"{GATEWAY} is missing: run `cargo build --release` first")
    load_before = load_average()
    started = time.monotonic()
    run = measure(settings, names, sections, ray_python(options), skipped)
    progress(f"measured in {time.monotonic() - started:.0f} s")
    loads = (load_before, load_average())
    env = environment()
    print(report(settings, env, loads, run))
    if options.json is not None:
        write_json(options.json, settings, env, loads, run)
    if run.failures:
        sys.exit(f"{plural(len(run.failures), 'failure')}: see the header")


if __name__ == "__main__":
    main()
