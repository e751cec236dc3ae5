"""The gateway's memory is bounded by its flags, on both transports, whatever
callers do: here, a caller that starts a long ``map`` of large results,
reads one and stops. The bound the README and SECURITY.md state::

    resident memory <= what it holds at rest
                       + --max-receiving-bytes + --queue-max-bytes
                       + --max-undelivered-bytes + --function-cache-bytes
                       + workers x (2 x --max-payload-bytes + 2 x --ring-bytes on shm)
"""

from __future__ import annotations

import pathlib
import re
import time

from distribute_challenge import compute_this

MIB = 1 << 20
RESULT = 8 * MIB
WORKERS = 2
FLAGS = {
    "--max-payload-bytes": 16 * MIB,
    "--queue-max-bytes": 64 * MIB,
    "--max-receiving-bytes": 64 * MIB,
    "--max-undelivered-bytes": 64 * MIB,
    "--function-cache-bytes": 8 * MIB,
    "--ring-bytes": 4 * MIB,
}


def kib(pid: int, field: str) -> int:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1))


def bound(transport: str) -> int:
    """What the flags let the gateway hold, in bytes."""
    per_worker = 2 * FLAGS["--max-payload-bytes"]
    if transport == "shm":
        per_worker += 2 * FLAGS["--ring-bytes"]
    held = (
        FLAGS["--max-receiving-bytes"]
        + FLAGS["--queue-max-bytes"]
        + FLAGS["--max-undelivered-bytes"]
        + FLAGS["--function-cache-bytes"]
    )
    return held + WORKERS * per_worker


def large(i):
    return bytes([i % 256]) * RESULT


def test_results_a_caller_does_not_read_stay_within_the_bound(start_gateway, transport):
    flags = [str(part) for flag, value in FLAGS.items() for part in (flag, value)]
    gateway = start_gateway("--workers", str(WORKERS), *flags)
    pid = gateway.process.pid
    at_rest = kib(pid, "VmRSS") * 1024
    remote = compute_this(server=gateway.url)(large)
    results = remote.map(range(100))  # 800 MiB of results in all
    assert next(results) == bytes([0]) * RESULT
    time.sleep(3)  # every worker that can go on has gone on meanwhile
    peak = kib(pid, "VmHWM") * 1024
    assert peak <= at_rest + bound(transport), (
        f"the gateway peaked at {peak / MIB:.0f} MiB, over the bound of "
        f"{(at_rest + bound(transport)) / MIB:.0f} MiB"
    )
    # Read on: every result comes, and the workers are free again.
    for i, result in enumerate(results, start=1):
        assert result[:1] == bytes([i % 256]) and len(result) == RESULT
    gateway.wait_for(lambda g: g.info().ready == WORKERS, "idle workers")
    assert gateway.restarts() == 0


def test_a_caller_that_reads_steadily_gets_every_result_past_its_share(start_gateway):
    """Its share filled by results on their way to it, a stream reads no
    more calls until the client takes them; then it reads on (a client
    with a small window sends its calls a few at a time)."""
    flags = [str(part) for flag, value in FLAGS.items() for part in (flag, value)]
    gateway = start_gateway("--workers", str(WORKERS), *flags)
    remote = compute_this(server=gateway.url)(large)
    results = remote.map(range(40), window=4, timeout=120)
    for i, result in enumerate(results):
        assert result[:1] == bytes([i % 256]) and len(result) == RESULT
    assert i == 39
