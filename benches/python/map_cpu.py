"""Where the CPU time of a map's call goes: one ``map`` of no-ops against a
lone gateway, and the CPU time (user and system) each side spent on it, per
call: this client, the gateway process, and its workers together.

    cargo build --release
    cd /tmp && /path/to/checkout/.venv/bin/python /path/to/checkout/benches/python/map_cpu.py
    ... map_cpu.py --calls 100000 --rounds 3 --transports pipe,shm

The times come from ``os.times()`` (the client) and ``/proc/<pid>/stat``
(the gateway and each of its children, read before and after the map), so
they count everything each process did meanwhile, the kernel's share
included. A fresh gateway per transport, the transports alternating from
round to round. Run it from a directory without a ``worker_shim`` of its
own (the workers would import that one). Output: one Markdown row per run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

from _servers import GATEWAY, gateway_command, launched

from distribute_challenge import compute_this


def noop(x):
    return x


def cpu_seconds(pid: int) -> float:
    """User and system time of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    listed = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=True
    )
    return [int(child) for child in listed.stdout.split()]


def one_run(binary: str, transport: str, workers: int, calls: int) -> str:
    with launched(gateway_command(binary, transport, workers)) as (process, url, _):
        remote = compute_this(server=url)(noop)
        if list(remote.map(range(2000))) != list(range(2000)):  # warm-up, and a check
            raise SystemExit("a warm-up map came back wrong")
        pids = children(process.pid)
        gateway_before = cpu_seconds(process.pid)
        workers_before = sum(cpu_seconds(pid) for pid in pids)
        client_before = sum(os.times()[:2])
        started = time.perf_counter()
        for expected, result in enumerate(remote.map(range(calls))):
            if result != expected:
                raise SystemExit(f"call {expected} came back as {result!r}")
        seconds = time.perf_counter() - started
        client = sum(os.times()[:2]) - client_before
        gateway = cpu_seconds(process.pid) - gateway_before
        worker_time = sum(cpu_seconds(pid) for pid in pids) - workers_before

    def per_call(total: float) -> str:
        return f"{total / calls * 1e6:.1f} µs"

    return (
        f"| {transport} | {calls / seconds:,.0f} | {per_call(client)} | {per_call(gateway)}"
        f" | {per_call(worker_time)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default=str(GATEWAY), help="the gateway to start")
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--transports", default="pipe,shm")
    options = parser.parse_args()
    transports = options.transports.split(",")
    print(f"| transport | calls/s | client | gateway | {options.workers} workers |")
    print("|---|---:|---:|---:|---:|")
    for round_number in range(options.rounds):
        shift = round_number % len(transports)
        for transport in transports[shift:] + transports[:shift]:
            print(one_run(options.binary, transport, options.workers, options.calls), flush=True)


if __name__ == "__main__":
    main()
