"""Payloads larger than the shared-memory rings stream through them in both
directions, with flow control, at every size around the ring's edges.

A gateway with one-page rings makes every call of more than a few KiB take
many turns of both rings, with both sides waiting for each other: a lost
wake-up here shows up as a hang (caught by the suite's timeout). On the pipe
transport the same calls check that nothing depends on the ring.
"""

from __future__ import annotations

import asyncio
import random

from distribute_challenge import compute_this

RING_BYTES = 4096


def reversed_bytes(data):
    return data[::-1]


def sizes_around_the_ring() -> list[int]:
    edges = [0, 1, 15, 16, 17]
    for turns in (1, 2, 3, 16):
        edges += [turns * RING_BYTES + delta for delta in (-33, -17, -16, -1, 0, 1, 16, 17)]
    generator = random.Random(20261128)
    return edges + [generator.randrange(1, 300_000) for _ in range(40)]


def test_every_size_streams_through_one_page_rings(start_gateway):
    gateway = start_gateway("--ring-bytes", str(RING_BYTES), "--workers", "2")
    function = compute_this(server=gateway.url)(reversed_bytes)
    sizes = sizes_around_the_ring()
    payloads = [random.Random(size).randbytes(size) for size in sizes]

    async def main():
        return await asyncio.gather(*(function(payload).async_run() for payload in payloads))

    for _ in range(3):
        results = asyncio.run(main())
        assert [len(result) for result in results] == sizes
        assert results == [payload[::-1] for payload in payloads]
    assert gateway.restarts() == 0
