"""A burst of 100,000 small calls from one asyncio client, on each transport:
every result checked, the gateway's memory watched.

    cargo build --release
    .venv/bin/python benches/python/burst.py                      # 100,000 calls, both transports
    .venv/bin/python benches/python/burst.py --calls 20000 --transports shm --wave 10000
    .venv/bin/python benches/python/burst.py --queue-capacity 1000  # the queue refuses; retries

By default every call is started at once (``asyncio.gather`` over all of
them); ``--wave N`` starts them N at a time instead. The client's own channel
and the gateway's queue bound what is in flight; a call the gateway refuses
with ``queue-full`` is sent again by the client (``busy_timeout``), and the
number of such attempts is printed.

Per transport it prints the wall time and calls/s, and the gateway's
resident memory: before the burst, the highest of samples taken every 20 ms
during it, and ``VmHWM`` (the kernel's high-water mark over the gateway's
whole life) from ``/proc/<pid>/status``; and the client's own ``VmHWM``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import sys
import threading
import time

from _servers import GATEWAY, gateway

from distribute_challenge import _retry, compute_this


def square(x):
    return x * x


def status_kib(pid: int | str, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (e.g. ``VmRSS``, ``VmHWM``)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def gateway_pid() -> int:
    """The pid of the gateway this process started (its child running GATEWAY)."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
            exe = os.readlink(f"/proc/{entry}/exe")
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == me and pathlib.Path(exe.removesuffix(" (deleted)")) == GATEWAY.resolve():
            return int(entry)
    sys.exit("cannot find the gateway process")


class RssSampler:
    """Polls a process's VmRSS in a thread; keeps the highest."""

    def __init__(self, pid: int, period: float = 0.02) -> None:
        self.pid, self.period = pid, period
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))
            self._stop.wait(self.period)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class CountingRetry(_retry.BusyRetry):
    """Counts every attempt the client makes (first sends and retries)."""

    attempts = 0

    def attempt_timeout(self):
        CountingRetry.attempts += 1
        return super().attempt_timeout()


async def burst(url: str, calls: int, wave: int) -> int:
    """Runs ``square(i)`` for every i; returns how many results were wrong."""
    remote = compute_this(server=url)(square)
    wrong = 0
    for start in range(0, calls, wave):
        indices = range(start, min(start + wave, calls))
        results = await asyncio.gather(*(remote(i).async_run() for i in indices))
        wrong += sum(result != i * i for i, result in zip(indices, results, strict=True))
    return wrong


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def run(transport: str, calls: int, wave: int, workers: int, flags: list[str]) -> bool:
    with gateway(transport, workers, *flags) as url:
        pid = gateway_pid()
        asyncio.run(burst(url, 100, 100))  # warm-up: connection, workers' imports
        before = status_kib(pid, "VmRSS")
        CountingRetry.attempts = 0
        with RssSampler(pid) as sampler:
            started = time.perf_counter()
            wrong = asyncio.run(burst(url, calls, wave))
            elapsed = time.perf_counter() - started
        hwm = status_kib(pid, "VmHWM")
    retried = CountingRetry.attempts - calls
    print(
        f"{transport:>4}: {calls} calls ({'all at once' if wave >= calls else f'waves of {wave}'},"
        f" {workers} workers) in {elapsed:.1f}s = {calls / elapsed:,.0f} calls/s; "
        f"{wrong} wrong; {retried} retries after queue-full\n"
        f"      gateway RSS: {mib(before)} before, {mib(sampler.peak_kib)} peak sampled, "
        f"VmHWM {mib(hwm)}; client VmHWM {mib(status_kib('self', 'VmHWM'))}",
        flush=True,
    )
    return wrong == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--wave", type=int, default=0, help="calls started at once (0: all)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--transports", nargs="+", default=["pipe", "shm"])
    parser.add_argument("--queue-capacity", type=int, help="the gateway's (default: its own)")
    args = parser.parse_args()
    _retry.BusyRetry = CountingRetry
    wave = args.wave or args.calls
    flags = [] if args.queue_capacity is None else ["--queue-capacity", str(args.queue_capacity)]
    ok = [run(transport, args.calls, wave, args.workers, flags) for transport in args.transports]
    sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
