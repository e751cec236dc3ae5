"""Where one call's time goes in the gateway: ``--calls`` sequential no-op
calls with the gateway's per-hop events on (``RUST_LOG=mystic::hops=debug``,
``src/hops.rs``), then the median time of each hop from the previous one,
next to the client's whole round trip.

    .venv/bin/python benches/python/hops.py --transport shm --calls 2000
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time

import harness

HOPS = ["received", "queued", "picked", "written", "read", "replied", "returned"]
# Measured from the call's arrival (service hops) or its queueing (the rest).
FROM_ARRIVAL = {"received", "queued", "returned"}
EVENT = re.compile(r'hop="?(\w+)"? us=(\d+)')


def noop():
    return None


def _lines(path: str) -> list[str]:
    with open(path, errors="replace") as log:
        return log.readlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=["pipe", "shm"], default="shm")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--checkout", default=".")
    args = parser.parse_args()
    from distribute_challenge import compute_this

    env = dict(os.environ, RUST_LOG="info,mystic::hops=debug")
    binary = harness.binary_of(harness.checkout_of(args.checkout))
    with tempfile.NamedTemporaryFile(suffix=".log") as log_file:
        with harness.gateway(binary, args.transport, env=env, log_path=log_file.name) as (url, _):
            remote = compute_this(server=url)(noop)
            for _ in range(200):
                remote().run()
            skip = sum(1 for line in _lines(log_file.name) if "hop=" in line)
            trips = []
            for _ in range(args.calls):
                start = time.perf_counter()
                remote().run()
                trips.append(time.perf_counter() - start)
            time.sleep(0.5)
        events = [EVENT.search(line) for line in _lines(log_file.name)]
    calls, current = [], {}
    for event in [event for event in events if event][skip:]:
        hop, us = event.group(1), int(event.group(2))
        if hop == "received" and current:
            calls.append(current)
            current = {}
        current[hop] = us
    calls.append(current)
    calls = [call for call in calls if set(HOPS) <= set(call)]
    print(f"command: benches/python/hops.py --transport {args.transport} --calls {args.calls}")
    print(f"{len(calls)} calls with every hop; client round trip p50 ", end="")
    print(f"{statistics.median(trips) * 1e6:,.0f} µs\n")
    print("| hop | since the previous one (p50) |")
    print("|---|---:|")
    previous = 0.0
    for hop in HOPS:
        at = [call[hop] + (0 if hop in FROM_ARRIVAL else call["queued"]) for call in calls]
        median = statistics.median(at)
        print(f"| {hop} | {median - previous:,.0f} µs |")
        previous = median


if __name__ == "__main__":
    main()
