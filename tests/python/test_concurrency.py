"""Many calls at once: asyncio and threads, every result right, every worker
used, one call at a time per worker; event loops come and go."""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor


def square_with_pid(x):
    return x * x, os.getpid()


def timed_nap(seconds):
    start = time.monotonic()
    time.sleep(seconds)
    return os.getpid(), start, time.monotonic()


def test_thousands_of_concurrent_async_calls(remote, gateway):
    function = remote(square_with_pid)
    count = 2000

    async def main():
        return await asyncio.gather(*(function(n).async_run() for n in range(count)))

    results = asyncio.run(main())
    assert [square for square, _ in results] == [n * n for n in range(count)]
    assert {pid for _, pid in results} == gateway.worker_pids()


def test_one_call_at_a_time_per_worker(remote, gateway):
    function = remote(timed_nap)

    async def main():
        return await asyncio.gather(*(function(0.02).async_run() for _ in range(40)))

    intervals = defaultdict(list)
    for pid, start, end in asyncio.run(main()):
        intervals[pid].append((start, end))
    assert set(intervals) == gateway.worker_pids()
    for pid, spans in intervals.items():
        spans.sort()
        for (_, previous_end), (next_start, _) in zip(spans, spans[1:], strict=False):
            assert next_start >= previous_end, f"calls overlapped on worker {pid}"


def test_concurrent_sync_calls_from_threads(remote):
    function = remote(square_with_pid)
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda n: function(n).run()[0], range(200)))
    assert results == [n * n for n in range(200)]


def test_repeated_asyncio_run(remote):
    function = remote(square_with_pid)
    for n in range(5):
        assert asyncio.run(function(n).async_run())[0] == n * n


def test_run_inside_a_running_event_loop(remote):
    function = remote(square_with_pid)

    async def main():
        blocking = function(6).run()
        awaited = await function(7).async_run()
        return blocking[0], awaited[0]

    assert asyncio.run(main()) == (36, 49)


def test_async_calls_from_several_loops_in_threads(remote):
    function = remote(square_with_pid)

    def in_own_loop(n):
        async def main():
            return await asyncio.gather(*(function(n + k).async_run() for k in range(10)))

        return [square for square, _ in asyncio.run(main())]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(in_own_loop, [0, 100, 200, 300]))
    assert results == [[(n + k) ** 2 for k in range(10)] for n in [0, 100, 200, 300]]
