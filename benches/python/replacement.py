"""Time from SIGKILL of an idle worker until its slot serves again (a
different process in the slot, idle), per gateway set-up and transport; the
set-ups are interleaved A B A B ... (one gateway each, ``--rounds`` times) so
that the machine's drift hits all alike.

    .venv/bin/python benches/python/replacement.py --workers 4 --crashes 100 \\
        --rounds 3 --setup template= --setup direct=--no-template

Each crash picks the next slot round robin, reads its pid, kills it, then polls
``GetWorkers`` every 0.5 ms until the slot holds a new pid in state IDLE: the
figure includes up to one polling interval and one ``GetWorkers`` round trip,
and the gateway's fixed 50 ms wait before it restarts a slot that died. Crashes
are 20 ms apart. Each ``--setup`` is ``NAME=FLAGS`` (gateway flags, possibly
none) or just ``FLAGS`` (``--setup=--no-template``), named after its flags.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import grpc
from _servers import stop

from distribute_challenge._pb import gateway_pb2, gateway_pb2_grpc


def parse_setup(text: str) -> tuple[str, list[str]]:
    if text.startswith("-"):
        return text, shlex.split(text)
    name, _, flags = text.partition("=")
    return name, shlex.split(flags)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest rank: the smallest value with `fraction` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def slot(stub, index: int):
    workers = stub.GetWorkers(gateway_pb2.GetWorkersRequest(), timeout=10).workers
    return next(worker for worker in workers if worker.index == index)


def crash(stub, index: int, timeout: float = 60) -> float:
    """Kills the idle worker of slot `index`; seconds until the slot is idle again."""
    deadline = time.monotonic() + timeout
    worker = slot(stub, index)
    while worker.state != gateway_pb2.WORKER_STATE_IDLE or not worker.pid:
        if time.monotonic() > deadline:
            sys.exit(f"slot {index} never became idle: {worker}")
        time.sleep(0.0005)
        worker = slot(stub, index)
    old = worker.pid
    started = time.monotonic()
    os.kill(old, signal.SIGKILL)
    while True:
        worker = slot(stub, index)
        if worker.pid not in (0, old) and worker.state == gateway_pb2.WORKER_STATE_IDLE:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            sys.exit(f"slot {index} not replaced after {timeout}s: {worker}")
        time.sleep(0.0005)


def run(command: list[str], workers: int, crashes: int) -> list[float]:
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            line = process.stdout.readline()
            if not line.startswith("serving "):
                log.seek(0)
                sys.exit(f"{command} did not serve:\n{log.read().decode(errors='replace')[-2000:]}")
            address = line.split()[1].removeprefix("grpc://")
            with grpc.insecure_channel(address) as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                times = []
                for number in range(crashes):
                    times.append(crash(stub, number % workers))
                    time.sleep(0.02)
                reply = stub.GetWorkers(gateway_pb2.GetWorkersRequest(), timeout=10)
                restarts = sum(worker.restarts for worker in reply.workers)
                if restarts != crashes:
                    print(f"  note: {restarts} restarts for {crashes} crashes", flush=True)
            return times
        finally:
            stop(process, grace=60)


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
                command = [args.binary, "--listen", "127.0.0.1:0", "--transport", transport]
                command += ["--workers", str(args.workers), "--python", sys.executable]
                command += ["--startup-timeout", "300", *flags]
                times = [seconds * 1000 for seconds in run(command, args.workers, args.crashes)]
                results.setdefault((name, transport), []).extend(times)
                median = statistics.median(times)
                print(f"{name:>14} {transport:>4}: median {median:.1f} ms", flush=True)
    print(f"\n{args.workers} workers: ms from SIGKILL until the slot is idle again")
    print(f"{'':>14} {'':>4}  {'median':>7} {'p90':>7} {'p99':>7} {'max':>7} crashes")
    for (name, transport), times in results.items():
        print(
            f"{name:>14} {transport:>4}: {statistics.median(times):7.1f}"
            f" {percentile(times, 0.9):7.1f} {percentile(times, 0.99):7.1f}"
            f" {max(times):7.1f} {len(times):7d}"
        )


if __name__ == "__main__":
    main()
