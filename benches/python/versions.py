"""Two checkouts of this project against each other, interleaved in one run:
no-op latency and a burst of calls, each version with its own gateway,
client and workers.

    git worktree add /tmp/before OLD_COMMIT && (cd /tmp/before && cargo build --release)
    .venv/bin/python benches/python/versions.py --version before=/tmp/before --version after=.
    .venv/bin/python benches/python/versions.py --version "one=. --runtime-threads 1" \
        --version "two=. --runtime-threads 2"      # one checkout, two sets of gateway flags

Each block runs in a fresh process with ``PYTHONPATH`` set to the version's
checkout and the working directory a temporary one (so that its workers
import that checkout's ``worker_shim``), against the checkout's
``target/release/mysticchallenge`` with ``--workers 4`` and the flags given
after the checkout, if any: 200 warm-up calls,
then ``--calls`` sequential no-op calls and ``--burst`` no-op
``async_run()`` gathered at once. Rounds alternate the versions' order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time


def noop():
    return None


def block(binary: str, transport: str, calls: int, burst: int, flags: list[str]) -> None:
    """One version's block, in this process (started by :func:`main`)."""
    from _servers import serving

    from distribute_challenge import compute_this

    command = [binary, "--listen", "127.0.0.1:0", "--transport", transport]
    command += ["--workers", "4", "--python", sys.executable, *flags]
    with serving(command) as url:
        remote = compute_this(server=url)(noop)
        for _ in range(200):
            remote().run()
        latencies = []
        for _ in range(calls):
            start = time.perf_counter()
            remote().run()
            latencies.append(time.perf_counter() - start)

        async def gathered() -> float:
            await remote().async_run()
            start = time.perf_counter()
            await asyncio.gather(*(remote().async_run() for _ in range(burst)))
            return burst / (time.perf_counter() - start)

        rate = asyncio.run(gathered())
    print(json.dumps({"latencies": latencies, "rate": rate}))


def run_block(
    checkout: pathlib.Path, flags: list[str], transport: str, args: argparse.Namespace
) -> dict:
    binary = checkout / "target" / "release" / "mysticchallenge"
    env = dict(os.environ, PYTHONPATH=f"{checkout}{os.pathsep}{pathlib.Path(__file__).parent}")
    command = [sys.executable, __file__, "--block", str(binary), transport]
    command += ["--calls", str(args.calls), "--burst", str(args.burst)]
    command += [f"--gateway-flag={flag}" for flag in flags]
    with tempfile.TemporaryDirectory() as workdir:
        finished = subprocess.run(command, env=env, capture_output=True, text=True, cwd=workdir)
    if finished.returncode != 0:
        sys.exit(f"the block of {checkout} on {transport} failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--version", action="append", default=[], help="NAME=CHECKOUT [GATEWAY FLAGS...]"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--block", nargs=2, metavar=("BINARY", "TRANSPORT"), help=argparse.SUPPRESS)
    parser.add_argument("--gateway-flag", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.block:
        block(*args.block, args.calls, args.burst, args.gateway_flag)
        return
    versions = [entry.split("=", 1) for entry in args.version]
    if len(versions) < 2 or any(len(entry) != 2 for entry in versions):
        parser.error("give at least two --version NAME=CHECKOUT")
    results: dict[tuple[str, str], dict[str, list]] = {}
    for number in range(args.rounds):
        order = versions if number % 2 == 0 else versions[::-1]
        for transport in ("pipe", "shm"):
            for name, checkout in order:
                path, *flags = checkout.split()
                figures = run_block(pathlib.Path(path).resolve(), flags, transport, args)
                entry = results.setdefault((name, transport), {"latencies": [], "rates": []})
                entry["latencies"] += figures["latencies"]
                entry["rates"].append(figures["rate"])
        print(f"round {number + 1}/{args.rounds}", file=sys.stderr)
    print(f"command: {' '.join(sys.argv)}\n")
    print(f"| version | transport | no-op p50 | p99 | {args.burst:,} at once |")
    print("|---|---|---:|---:|---:|")
    for (name, transport), entry in sorted(results.items(), key=lambda item: item[0][1]):
        latencies = sorted(entry["latencies"])
        p50 = latencies[len(latencies) // 2] * 1e6
        p99 = latencies[int(len(latencies) * 0.99)] * 1e6
        rate = statistics.median(entry["rates"])
        print(f"| {name} | {transport} | {p50:,.0f} µs | {p99:,.0f} µs | {rate:,.0f}/s |")


if __name__ == "__main__":
    main()
