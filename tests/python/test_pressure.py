"""Memory bounded by what the flags say, on both transports: several client
processes push large payloads at once; the gateway's peak RSS stays within
its configured bounds (bytes being received, bytes queued, the calls
running) plus a fixed overhead, and every call is either answered or
refused with ServerBusy or PayloadTooLarge: none is lost."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections import Counter

from system_state import status_kib

from distribute_challenge import compute_this

MiB = 1 << 20
LIMIT = 8 * MiB  # --max-payload-bytes
QUEUED = 16 * MiB  # --queue-max-bytes
RECEIVING = 16 * MiB  # --max-receiving-bytes
# What one running call holds in the gateway: its request, its response as
# read from the worker, and the response being encoded for gRPC.
RUNNING = 3 * LIMIT
# What HTTP/2 may buffer per connection before the gateway reads it (the
# connection's flow-control window, src/server/mod.rs).
WINDOW = 32 * MiB
# The gateway itself, its runtime and allocator slack.
OVERHEAD = 64 * MiB
CLIENT = pathlib.Path(__file__).parents[1] / "support" / "pressure_client.py"
PROCESSES, THREADS, CALLS = 4, 8, 2
SIZE = 7 * MiB  # fits the limit with the pickle around it


def echo(data):
    return data


def push(gateway) -> Counter[str]:
    """Runs the client processes against ``gateway``; how their calls ended."""
    clients = [
        subprocess.Popen(
            [sys.executable, str(CLIENT), gateway.url, str(THREADS), str(CALLS), str(SIZE)]
            + [str(LIMIT + MiB)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    outcomes: Counter[str] = Counter()
    for client in clients:
        out, _ = client.communicate(timeout=300)
        assert client.returncode == 0
        outcomes.update(json.loads(out))
    total = PROCESSES * (THREADS * CALLS + 1)
    assert sum(outcomes.values()) == total, outcomes
    lost = {
        what: n
        for what, n in outcomes.items()
        if what not in ("ok", "busy-queue", "busy-receiving", "too-large")
    }
    assert lost == {}, outcomes
    assert outcomes["too-large"] == PROCESSES, outcomes
    assert outcomes["ok"] >= 1, outcomes
    return outcomes


def gateway_with(start_gateway, queued: int, receiving: int):
    return start_gateway(
        "--workers",
        "1",
        "--max-payload-bytes",
        str(LIMIT),
        "--queue-max-bytes",
        str(queued),
        "--max-receiving-bytes",
        str(receiving),
    )


def test_many_large_requests_at_once_stay_within_the_bounds(start_gateway):
    gateway = gateway_with(start_gateway, QUEUED, RECEIVING)
    pid = gateway.process.pid
    # One large call first, so that the baseline has the allocator warmed.
    assert len(compute_this(server=gateway.url)(echo)(bytes(SIZE)).run()) == SIZE
    baseline = status_kib(pid, "VmRSS") * 1024
    pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM

    outcomes = push(gateway)
    peak = status_kib(pid, "VmHWM") * 1024
    bound = QUEUED + RECEIVING + RUNNING + PROCESSES * WINDOW + OVERHEAD
    assert peak - baseline <= bound, (
        f"peak RSS grew by {(peak - baseline) / MiB:.0f} MiB over the baseline, "
        f"past the bounds' {bound / MiB:.0f} MiB; outcomes {dict(outcomes)}"
    )
    # And the gateway is still fine.
    assert compute_this(server=gateway.url)(echo)(b"after").run() == b"after"


def test_requests_being_received_are_refused_past_their_own_bound(start_gateway):
    # The queue would hold everything: only the bound on bytes being received
    # can refuse, and it does, as queue-full (ServerBusy) that names its flag.
    gateway = gateway_with(start_gateway, 1 << 30, 1 * MiB)
    outcomes = push(gateway)
    assert outcomes["busy-receiving"] >= 1, outcomes
    assert outcomes["busy-queue"] == 0, outcomes
    assert compute_this(server=gateway.url)(echo)(b"after").run() == b"after"
