"""Where the CPU of sequential no-op calls goes, by process and component:
``perf record -a`` (Linux ``perf``, sampling the whole machine) while this
process makes ``--calls`` no-op ``.run()`` calls to a gateway of 4 workers,
then the samples grouped by who ran them (this client, the gateway, its
workers, anything else) and what ran (HTTP/2 and gRPC, the kernel's TCP,
the kernel's scheduling and wake-ups, the Python interpreter, tokio, the
rest), as microseconds of CPU per call, beside the time the machine's CPUs
sat idle. A sequential call whose CPUs mostly idle is bound by its chain of
wake-ups, not by the work any one hop does.

    .venv/bin/python benches/python/call_profile.py --transport shm --calls 8000

Needs ``perf`` allowed to sample the whole machine (root, or
``kernel.perf_event_paranoid`` at most 0).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import harness

# What ran, by the symbol or library a sample fell in; the first match wins.
COMPONENTS = [
    ("HTTP/2 and gRPC", re.compile(r"\bh2::|\bhyper|\btonic|\bhttp::|\bhttp_body|\bprost")),
    ("tokio", re.compile(r"\btokio|\bmio::")),
    ("kernel: TCP and sockets", re.compile(r"tcp|skb|inet|\bip_|sock|unix_|net_rx|__dev_")),
    (
        "kernel: scheduling and wake-ups",
        re.compile(r"sched|futex|wake|switch|epoll|idle|irq|hrtimer|tick|ep_poll|halt"),
    ),
    ("Python interpreter", re.compile(r"libpython|_Py|Py[A-Z]|cpython")),
]
SAMPLE = re.compile(r"\s*([\d.]+)%\s+(\d+):(\S+)\s+(\S+)\s+\[(.)\]\s+(.*)")


def noop():
    return None


def component(dso: str, kind: str, symbol: str) -> str:
    """The component a sample of ``symbol`` in ``dso`` (kernel if ``kind``
    is ``k``) belongs to."""
    text = f"{dso} {symbol}"
    for name, pattern in COMPONENTS:
        if name.startswith("kernel") != (kind == "k"):
            continue
        if pattern.search(text):
            return name
    return "kernel: other" if kind == "k" else "the rest (our code, libc, allocator)"


def shares(report: str, roles: dict[int, str]) -> dict[tuple[str, str], float]:
    """Percent of all samples per (role, component), from ``perf report
    --sort pid,dso,sym`` text; ``roles`` names processes by pid (pid 0 is
    the idle CPUs, any other pid is ``other``)."""
    found: dict[tuple[str, str], float] = collections.Counter()
    for line in report.splitlines():
        sample = SAMPLE.match(line)
        if sample is None:
            continue
        percent, pid = float(sample[1]), int(sample[2])
        if pid == 0:
            found["idle", ""] += percent
            continue
        role = roles.get(pid, "other")
        found[role, component(sample[4], sample[5], sample[6])] += percent
    return found


def children_of(pid: int) -> set[int]:
    """Every live process under ``pid``."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def threads_of(pids: set[int]) -> list[int]:
    """The thread ids of ``pids`` (``perf report`` names samples by thread)."""
    found = []
    for pid in pids:
        try:
            found.extend(int(tid) for tid in os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return found


def sampled_seconds(data: str) -> float:
    """How long ``perf record`` sampled, from its header."""
    header = subprocess.run(
        ["perf", "report", "-i", data, "--header-only"], capture_output=True, text=True
    ).stdout
    found = re.search(r"sample duration\s*:\s*([\d.]+) ms", header)
    if found is None:
        sys.exit("perf report printed no sample duration")
    return float(found[1]) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=["pipe", "shm"], default="shm")
    parser.add_argument("--calls", type=harness.count, default=8000)
    parser.add_argument("--checkout", default=".")
    args = parser.parse_args()
    if shutil.which("perf") is None:
        sys.exit("call_profile.py needs Linux perf (linux-tools, or the distribution's perf)")
    from distribute_challenge import compute_this

    binary = harness.binary_of(harness.checkout_of(args.checkout))
    with (
        harness.gateway(binary, args.transport) as (url, process),
        tempfile.TemporaryDirectory() as tmp,
    ):
        remote = compute_this(server=url)(noop)
        for _ in range(300):
            remote().run()
        roles = dict.fromkeys(threads_of({os.getpid()}), "client")
        roles.update(dict.fromkeys(threads_of({process.pid}), "gateway"))
        roles.update(dict.fromkeys(threads_of(children_of(process.pid)), "workers"))
        data = os.path.join(tmp, "perf.data")
        perf = subprocess.Popen(
            ["perf", "record", "-a", "-q", "-o", data], stderr=subprocess.DEVNULL
        )
        time.sleep(0.5)  # perf has started sampling (idle until the calls start)
        start = time.perf_counter()
        for _ in range(args.calls):
            remote().run()
        wall = time.perf_counter() - start
        perf.send_signal(signal.SIGINT)
        perf.wait(30)  # exits 130 once interrupted, having written its samples
        if not os.path.exists(data) or os.path.getsize(data) == 0:
            sys.exit("perf record failed: is it allowed to sample the whole machine?")
        sampled = sampled_seconds(data)
        report = subprocess.run(
            ["perf", "report", "-i", data, "-q", "--no-children", "--sort", "pid,dso,sym"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        client = client_share(url, args.calls // 4)
    found = shares(report, roles)
    found.pop(("idle", ""), None)
    cpus = os.cpu_count() or 1
    # One percent of the samples, as microseconds of CPU per call.
    scale = sampled * cpus * 1e6 / args.calls / 100
    per_call = {key: percent * scale for key, percent in found.items()}
    trip, busy = wall / args.calls * 1e6, sum(per_call.values())
    print(f"command: {harness.command_line('call_profile.py')}")
    print(f"{args.calls} sequential no-op calls, {trip:,.0f} µs each while sampled; ", end="")
    print(f"{busy:,.0f} µs of CPU each: the {cpus} CPUs idle {1 - busy / (trip * cpus):.0%}\n")
    print("\n".join(table(per_call)))
    print()
    print("\n".join(client))


def client_share(url: str, calls: int) -> list[str]:
    """This client's CPU per call (``getrusage``) and round trip, in
    interleaved blocks: ``.run()``, the bare native call of the same request
    wrapped in only its encoding and decoding, and the bare call alone (what
    ``.run()`` adds to it is the client's Python)."""
    from distribute_challenge import _client, compute_this
    from distribute_challenge._api import _Prepared
    from distribute_challenge._outcome import finish
    from mystic_wire import encode_call

    remote = compute_this(server=url)(noop)
    target = remote._settings.target()
    client = _client.client(target)
    prepared = _Prepared(remote(), target, None)
    request, metadata = prepared.request(False), prepared.metadata
    digest = prepared.capture.function.digest
    ways = {
        "`.run()`": lambda: remote().run(),
        "`encode_call`, bare call, `finish`": lambda: finish(
            client.execute(encode_call(digest, (), {}, (), "noop"), metadata, None)
        ),
        "bare `Client.execute`": lambda: client.execute(request, metadata, None),
    }
    found: dict[str, list[tuple[float, float, float]]] = {name: [] for name in ways}
    for _ in range(3):
        for name, call in ways.items():
            before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            for _ in range(calls):
                call()
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_SELF)
            user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
            found[name].append((wall / calls * 1e6, user / calls * 1e6, system / calls * 1e6))
    rows = [
        [name, *(f"{statistics.median(block[i] for block in blocks):,.0f} µs" for i in range(3))]
        for name, blocks in found.items()
    ]
    header = ["this client, no perf (medians of 3 blocks)", "round trip", "user CPU", "system CPU"]
    return harness.markdown_table(header, rows)


def table(per_call: dict[tuple[str, str], float]) -> list[str]:
    """Microseconds of CPU per call, a row per component (the largest
    first) and a column per role, with their totals."""
    roles = ["client", "gateway", "workers", "other"]
    totals: dict[str, float] = collections.Counter()
    for (_, name), micros in per_call.items():
        totals[name] += micros
    rows = [
        [name, *(f"{per_call.get((role, name), 0.0):,.1f}" for role in roles)]
        for name in sorted(totals, key=totals.__getitem__, reverse=True)
    ]
    by_role = [sum(v for (r, _), v in per_call.items() if r == role) for role in roles]
    rows.append(["all", *(f"{micros:,.1f}" for micros in by_role)])
    return harness.markdown_table(["µs of CPU per call", *roles], rows)


if __name__ == "__main__":
    main()
