"""Time from a worker's death in a call until its slot serves again (every
slot idle, one more restart), per gateway set-up and transport; the set-ups
are interleaved A B A B ... (one gateway each, ``--rounds`` times) so that
the machine's drift hits all alike.

    .venv/bin/python benches/python/replacement.py --workers 4 --crashes 100 \\
        --rounds 3 --setup template= --setup direct=--no-template

Each crash is a call whose function notes the time (``time.time()``) and
SIGKILLs its own worker; once the call has failed with ``WorkerCrashed``,
``GetWorkers`` is polled every 0.5 ms until every slot is idle again with one
more restart than before: the figure runs from the worker's death and
includes up to one polling interval and one ``GetWorkers`` round trip.
Crashes are 20 ms apart. Each ``--setup`` is ``NAME=FLAGS`` (gateway flags, possibly
none) or just ``FLAGS`` (``--setup=--no-template``), named after its flags.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time

import grpc
from _servers import gateway_command, launched

from distribute_challenge import WorkerCrashed, compute_this
from distribute_challenge._pb import gateway_pb2, gateway_pb2_grpc


def die(path: str) -> None:
    """Notes when, then kills this worker."""
    with open(path, "w") as note:
        note.write(repr(time.time()))
    os.kill(os.getpid(), signal.SIGKILL)


def parse_setup(text: str) -> tuple[str, list[str]]:
    if text.startswith("-"):
        return text, shlex.split(text)
    name, _, flags = text.partition("=")
    return name, shlex.split(flags)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest rank: the smallest value with `fraction` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def settled(stub, restarts: int) -> bool:
    reply = stub.GetWorkers(gateway_pb2.GetWorkersRequest(), timeout=10)
    idle = all(worker.state == gateway_pb2.WORKER_STATE_IDLE for worker in reply.workers)
    return idle and sum(worker.restarts for worker in reply.workers) == restarts


def crash(stub, url: str, restarts: int, note: str, timeout: float = 60) -> float:
    """Crashes a worker in a call; seconds from its death until it is replaced."""
    try:
        compute_this(server=url)(die)(note).run()
        sys.exit("the crashing call returned")
    except WorkerCrashed:
        pass
    with open(note) as noted:
        died = float(noted.read())
    deadline = time.monotonic() + timeout
    while not settled(stub, restarts + 1):
        if time.monotonic() > deadline:
            sys.exit(f"no replacement after {timeout}s")
        time.sleep(0.0005)
    return time.time() - died


def run(command: list[str], crashes: int) -> list[float]:
    with launched(command) as (_process, url, _seconds):
        with grpc.insecure_channel(url.removeprefix("grpc://")) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            times = []
            with tempfile.TemporaryDirectory() as scratch:
                note = os.path.join(scratch, "died")
                for number in range(crashes):
                    times.append(crash(stub, url, number, note))
                    time.sleep(0.02)
            reply = stub.GetWorkers(gateway_pb2.GetWorkersRequest(), timeout=10)
            restarts = sum(worker.restarts for worker in reply.workers)
            if restarts != crashes:
                print(f"  note: {restarts} restarts for {crashes} crashes", flush=True)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="target/release/mysticchallenge")
    parser.add_argument("--transports", default="pipe,shm")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--crashes", type=int, default=100, help="per gateway launched")
    parser.add_argument("--rounds", type=int, default=1, help="gateways per set-up and transport")
    parser.add_argument("--setup", action="append", metavar="NAME=FLAGS")
    args = parser.parse_args()
    setups = [parse_setup(text) for text in args.setup or ["template="]]
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for transport in args.transports.split(","):
            for name, flags in setups:
                command = gateway_command(args.binary, transport, args.workers, *flags)
                times = [seconds * 1000 for seconds in run(command, args.crashes)]
                results.setdefault((name, transport), []).extend(times)
                median = statistics.median(times)
                print(f"{name:>14} {transport:>4}: median {median:.1f} ms", flush=True)
    print(f"\n{args.workers} workers: ms from a worker's death until it is replaced")
    print(f"{'':>14} {'':>4}  {'median':>7} {'p90':>7} {'p99':>7} {'max':>7} crashes")
    for (name, transport), times in results.items():
        print(
            f"{name:>14} {transport:>4}: {statistics.median(times):7.1f}"
            f" {percentile(times, 0.9):7.1f} {percentile(times, 0.99):7.1f}"
            f" {max(times):7.1f} {len(times):7d}"
        )


if __name__ == "__main__":
    main()
