"""Generators that stream: ``func(x).stream()`` and ``.astream()`` yield the
items as the worker produces them, against real gateways on both transports.

A slow consumer pauses the generator (it does not run ahead without bound);
an exception in the generator comes after the items before it; leaving the
loop runs the generator's ``finally`` in the worker and frees it; ``.run()``
of a generator function is the list of its items.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import sys
import threading
import time

import cloudpickle
import pytest

from distribute_challenge import SerializationError

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def count(n):
    yield from range(n)


def counted(n, path, size):
    """Yields ``n`` items of ``size`` bytes, writing how many it made."""
    for i in range(n):
        pathlib.Path(path).write_text(str(i + 1))
        yield bytes(size)


def fails_after(n):
    yield from range(n)
    raise ValueError(f"failed after {n}")


def endless(marker):
    try:
        i = 0
        while True:
            yield i
            i += 1
    finally:
        pathlib.Path(marker).write_text(str(os.getpid()))


def chatty(n):
    for i in range(n):
        print(f"item {i}")
        yield i


def listed(n):
    return list(range(n))


def not_iterable():
    return 42


def unpicklable():
    yield 1
    yield threading.Lock()


def pid():
    return os.getpid()


def test_items_come_in_order(remote):
    assert list(remote(count)(1000).stream()) == list(range(1000))
    assert list(remote(count)(0).stream()) == []


def test_run_of_a_generator_function_is_the_list_of_its_items(remote):
    assert remote(count)(5).run() == [0, 1, 2, 3, 4]


def test_an_iterable_result_streams_too(remote):
    assert list(remote(listed)(4).stream()) == [0, 1, 2, 3]


def test_a_result_that_is_not_iterable_cannot_stream(remote):
    with pytest.raises(TypeError, match="stream\\(\\) needs a function that returns an iterable"):
        list(remote(not_iterable)().stream())


def test_an_exception_comes_after_the_items_before_it(remote):
    items = []
    with pytest.raises(ValueError, match="failed after 3"):
        for item in remote(fails_after)(3).stream():
            items.append(item)
    assert items == [0, 1, 2]


def test_an_item_that_cannot_be_pickled_is_a_serialization_error(remote):
    with pytest.raises(SerializationError, match="could not be pickled"):
        list(remote(unpicklable)().stream())


def test_a_slow_consumer_pauses_the_generator(remote, tmp_path):
    progress = tmp_path / "made"
    size, n = 64 << 10, 10_000  # 640 MiB in all, if it ran ahead
    items = remote(counted)(n, str(progress), size).stream()
    for _ in range(3):
        assert len(next(items)) == size
        time.sleep(0.5)
    made = int(progress.read_text())
    # What flow control lets through (HTTP/2 windows, a chunk or two in the
    # gateway): a few tens of MiB at most, far from all of it.
    assert made < 1000, f"the generator ran {made} items ahead"
    items.close()


def test_leaving_the_loop_runs_the_finally_and_frees_the_worker(start_gateway, tmp_path):
    gateway = start_gateway("--workers", "1")
    marker = tmp_path / "finally"
    from distribute_challenge import compute_this

    function = compute_this(server=gateway.url)(endless)
    for item in function(str(marker)).stream():
        if item == 5:
            break
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists(), "the generator's finally did not run"
    # The same worker takes the next call: it was freed, not replaced.
    assert compute_this(server=gateway.url)(pid)().run() == int(marker.read_text())
    assert gateway.restarts() == 0


def test_the_items_output_is_replayed(remote, capsys):
    assert list(remote(chatty)(3).stream()) == [0, 1, 2]
    assert capsys.readouterr().out == "item 0\nitem 1\nitem 2\n"


def test_astream_yields_on_the_event_loop(remote):
    async def main():
        return [item async for item in remote(count)(100).astream()]

    assert asyncio.run(main()) == list(range(100))


def test_breaking_out_of_astream_runs_the_finally(remote, tmp_path):
    marker = tmp_path / "finally"

    async def main():
        items = remote(endless)(str(marker)).astream()
        async for item in items:
            if item == 3:
                break
        await items.aclose()

    asyncio.run(main())
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists()


async def agen():
    yield 1


def test_an_async_generator_is_refused_with_what_to_do(remote):
    with pytest.raises(TypeError, match="async generator; stream\\(\\) runs plain generators"):
        list(remote(agen)().stream())
