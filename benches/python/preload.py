"""What a worker's first numpy call costs without and with ``--preload numpy``
(the template imports numpy before it forks the workers), and what the
preload adds to the time from launch until the gateway serves.

    .venv/bin/python benches/python/preload.py --rounds 5

Each round launches a fresh gateway (``--workers 2``), without then with the
preload, interleaved, and times three calls of ``first_numpy`` one after the
other through the client (``f().run()``). The first includes what any first
call pays on either set-up (the client opening its channel to the new
gateway). The gateway hands calls to its idle workers in turn, so the second
call usually runs on the other worker, a first call there too; the third is
then the warm one. Which calls ran on a warm worker (one that had already run
``first_numpy``) is read from ``calls_served`` and shown as ``warm``.
Skips if this interpreter cannot import numpy.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time

import grpc
from _servers import gateway_command, launched

from distribute_challenge import compute_this
from distribute_challenge._pb import gateway_pb2, gateway_pb2_grpc

CALLS = 3


def first_numpy():
    import numpy

    return float(numpy.arange(10).sum())


def served(stub) -> list[int]:
    """Calls served, per slot."""
    reply = stub.GetWorkers(gateway_pb2.GetWorkersRequest(), timeout=10)
    return [worker.calls_served for worker in sorted(reply.workers, key=lambda w: w.index)]


def round_(command: list[str]) -> tuple[float, list[float], list[bool]]:
    """Seconds until serving; ms of each call, and whether its worker was warm."""
    with launched(command) as (_process, url, serve_seconds):
        remote = compute_this(server=url)(first_numpy)
        calls_ms, warm = [], []
        with grpc.insecure_channel(url.removeprefix("grpc://")) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            before = served(stub)
            for _ in range(CALLS):
                started = time.perf_counter()
                result = remote().run()
                calls_ms.append((time.perf_counter() - started) * 1000)
                if result != 45.0:
                    sys.exit(f"first_numpy returned {result!r}, not 45.0")
                after = served(stub)
                slot = next(i for i in range(len(after)) if after[i] != before[i])
                warm.append(before[slot] > 0)
                before = after
        return serve_seconds, calls_ms, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="target/release/mysticchallenge")
    parser.add_argument("--transport", default="pipe")
    parser.add_argument("--rounds", type=int, default=5, help="gateways per set-up")
    args = parser.parse_args()
    if importlib.util.find_spec("numpy") is None:
        print(f"skipped: numpy is not importable by {sys.executable}")
        return
    setups = {"without": [], "with": ["--preload", "numpy"]}
    results: dict[str, list] = {name: [] for name in setups}
    for _ in range(args.rounds):
        for name, flags in setups.items():
            seconds, calls_ms, warm = round_(
                gateway_command(args.binary, args.transport, 2, *flags)
            )
            results[name].append((seconds, calls_ms, warm))
            calls = ", ".join(
                f"{ms:.1f}" + (" warm" if hot else "")
                for ms, hot in zip(calls_ms, warm, strict=True)
            )
            print(f"{name:>7}: serving {seconds:5.2f} s; calls {calls} ms", flush=True)
    print(f"\n{args.transport}, {args.rounds} rounds: medians (rounds in which the call was warm)")
    print(
        f"{'':>7}  {'serving s':>9}" + "".join(f"  {f'call {n + 1} ms':>13}" for n in range(CALLS))
    )
    for name, rows in results.items():
        cells = [f"{statistics.median([row[0] for row in rows]):9.2f}"]
        for n in range(CALLS):
            median = statistics.median([row[1][n] for row in rows])
            warm = sum(row[2][n] for row in rows)
            cells.append(f"{median:7.1f} ({warm}/{len(rows)})")
        print(f"{name:>7}: " + "  ".join(cells))


if __name__ == "__main__":
    main()
