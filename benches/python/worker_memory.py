"""Memory of an idle gateway and all its processes (the template, the workers,
and anything else below it), total and per worker, for each set-up, transport
and worker count; and the seconds from launch until it serves.

    .venv/bin/python benches/python/worker_memory.py --workers 100,500 \\
        --setup template= --setup direct=--no-template

Two seconds after the ``serving`` line, every process below the gateway
(found from the parent pids in ``/proc/*/stat``) and the gateway itself are
summed from ``/proc/PID/smaps_rollup``: ``Pss`` (shared pages split among
the processes that map them: the fair total), private (``Private_Clean`` +
``Private_Dirty``: what the processes would free on exit) and ``Rss`` (which
counts every shared page once per process); and the drop in the machine's
``MemAvailable`` since just before the launch (``/proc/meminfo``), which also
counts what no process maps (the shm rings' memfds are allocated in full,
``--ring-bytes`` x 2 per worker) and the kernel's page tables, and moves with
whatever else runs on the machine. One call then checks that the
gateway serves; after SIGTERM it must exit 0 and its processes be gone.
Each ``--setup`` is ``NAME=FLAGS`` (gateway flags, possibly none) or just
``FLAGS``, named after its flags.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from _servers import gateway_command, launched

from distribute_challenge import compute_this

FIELDS = ("Pss", "Private_Clean", "Private_Dirty", "Rss")


def one() -> int:
    return 1


def parse_setup(text: str) -> tuple[str, list[str]]:
    if text.startswith("-"):
        return text, shlex.split(text)
    name, _, flags = text.partition("=")
    return name, shlex.split(flags)


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The command name, in parentheses, may hold spaces: parse after it.
                parent = int(stat.read().rpartition(")")[2].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def memory_kib(pids: list[int]) -> dict[str, int]:
    """The `FIELDS` of smaps_rollup, in KiB, summed over `pids`."""
    totals = dict.fromkeys(FIELDS, 0)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    name, _, value = line.partition(":")
                    if name in totals:
                        totals[name] += int(value.split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return totals


def available_kib() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def measure(command: list[str]) -> tuple[float, int, dict[str, int]]:
    """Seconds until serving, processes, and memory of the idle gateway."""
    available = available_kib()
    with launched(command) as (process, url, serve_seconds):
        time.sleep(2)
        pids = descendants(process.pid)
        kib = memory_kib(pids)
        kib["system"] = available - available_kib()
        result = compute_this(server=url)(one)().run()
        if result != 1:
            sys.exit(f"the call returned {result!r}, not 1")
    if process.returncode != 0:
        sys.exit(f"the gateway exited {process.returncode} after SIGTERM")
    for _ in range(50):  # its processes should be gone within 5 s
        left = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
        if not left:
            break
        time.sleep(0.1)
    else:
        print(f"  note: {len(left)} of its processes still run 5 s after it exited", flush=True)
    return serve_seconds, len(pids), kib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="target/release/mysticchallenge")
    parser.add_argument("--workers", default="500", help="comma-separated worker counts")
    parser.add_argument("--transports", default="pipe,shm")
    parser.add_argument("--setup", action="append", metavar="NAME=FLAGS")
    args = parser.parse_args()
    setups = [parse_setup(text) for text in args.setup or ["template="]]
    print(
        f"{'':>14} {'':>4} {'workers':>7} {'procs':>5} {'serve s':>7}"
        f" {'Pss MiB':>9} {'/worker':>7} {'private':>9} {'/worker':>7}"
        f" {'RSS MiB':>9} {'/worker':>7} {'system':>9} {'/worker':>7}"
    )
    for workers in [int(count) for count in args.workers.split(",")]:
        for transport in args.transports.split(","):
            for name, flags in setups:
                command = gateway_command(args.binary, transport, workers, *flags)
                seconds, processes, kib = measure(command)
                pss = kib["Pss"] / 1024
                private = (kib["Private_Clean"] + kib["Private_Dirty"]) / 1024
                rss = kib["Rss"] / 1024
                system = kib["system"] / 1024
                print(
                    f"{name:>14} {transport:>4} {workers:7d} {processes:5d} {seconds:7.2f}"
                    f" {pss:9.1f} {pss / workers:7.2f} {private:9.1f} {private / workers:7.2f}"
                    f" {rss:9.1f} {rss / workers:7.2f} {system:9.1f} {system / workers:7.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
