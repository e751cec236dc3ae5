"""``map``, ``starmap``, ``amap`` and ``astarmap``: many calls over one stream,
against real gateways on both transports.

Results in order and as they come; exceptions at their place and with
``return_exceptions``; leaving early (no call starts after it, the worker is
free again); an endless lazy input bounded by ``window``; a worker that dies
in the middle; deadlines of the whole map and of each call; progress bars;
bad input; a gateway that does not know the function; a queue too small for
the window.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pathlib
import sys
import threading
import time

import cloudpickle
import pytest

from distribute_challenge import (
    CallTimeout,
    SerializationError,
    WorkerCrashed,
    compute_this,
)

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(x):
    return x * x


def add(x, y):
    return x + y


def nap(seconds):
    time.sleep(seconds)
    return seconds


def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def die_on(x, bad):
    if x == bad:
        os._exit(7)
    return x


def shout(x):
    print(f"out {x}")
    print(f"err {x}", file=sys.stderr)
    return x


def mark(directory, x):
    """Leaves a file per call that started, then takes a while."""
    pathlib.Path(directory, str(x)).touch()
    time.sleep(0.05)
    return x


def pid(_):
    return os.getpid()


def test_results_come_in_input_order(remote):
    assert list(remote(square).map(range(100))) == [x * x for x in range(100)]
    # Calls that finish out of order still come in order.
    sleeps = [0.3, 0.0, 0.2, 0.0, 0.1, 0.0]
    assert list(remote(nap).map(sleeps)) == sleeps


def held_until_released(item):
    """``item``, once the file it names (if it names one) exists."""
    if isinstance(item, str):
        deadline = time.monotonic() + 60
        while not os.path.exists(item) and time.monotonic() < deadline:
            time.sleep(0.01)
    return item


def test_unordered_results_come_as_they_finish(remote, tmp_path):
    # The first call runs until the test releases it, once the others have
    # come: on a loaded machine no nap is long enough to be sure of that.
    release = str(tmp_path / "release")
    results = remote(held_until_released).map([release, 1, 2, 3], ordered=False)
    assert sorted(itertools.islice(results, 3)) == [1, 2, 3]
    pathlib.Path(release).touch()
    assert list(results) == [release]


def test_starmap_spreads_each_tuple_over_the_arguments(remote):
    pairs = [(x, 10 * x) for x in range(20)]
    assert list(remote(add).starmap(pairs)) == [11 * x for x in range(20)]
    unordered = remote(add).starmap(iter(pairs), ordered=False, window=3)
    assert sorted(unordered) == [11 * x for x in range(20)]


def test_an_empty_input_gives_no_results(remote):
    assert list(remote(square).map([])) == []


def test_many_calls_all_come_back(remote):
    assert sum(remote(square).map(range(5000), window=64)) == sum(x * x for x in range(5000))


def test_an_exception_is_raised_at_its_place(remote):
    results = []
    with pytest.raises(ValueError, match="bad item 3"):
        for value in remote(fail_on).starmap((x, 3) for x in range(10)):
            results.append(value)
    assert results == [0, 1, 2]


def test_return_exceptions_yields_them_in_place(remote):
    results = list(remote(fail_on).starmap(((x, 3) for x in range(6)), return_exceptions=True))
    assert results[:3] == [0, 1, 2] and results[4:] == [4, 5]
    assert isinstance(results[3], ValueError) and str(results[3]) == "bad item 3"


def test_each_calls_output_is_replayed(remote, capsys):
    assert list(remote(shout).map([1, 2])) == [1, 2]
    captured = capsys.readouterr()
    assert captured.out == "out 1\nout 2\n"
    assert captured.err == "err 1\nerr 2\n"


def test_leaving_early_starts_no_more_calls_and_frees_the_workers(remote, tmp_path):
    marked = remote(mark)
    for value in marked.starmap((str(tmp_path), x) for x in range(1000)):
        assert value == 0
        break
    # What had started finishes; nothing starts after the stream is gone.
    time.sleep(0.5)
    started = len(os.listdir(tmp_path))
    time.sleep(0.5)
    assert len(os.listdir(tmp_path)) == started
    assert started < 1000
    # Both workers take calls again at once.
    assert list(remote(square).map(range(4))) == [0, 1, 4, 9]


def test_an_endless_input_is_consumed_only_as_far_as_the_window(remote):
    taken = itertools.count()
    pulled = []

    def endless():
        for x in taken:
            pulled.append(x)
            yield x

    results = list(itertools.islice(remote(square).map(endless(), window=8), 20))
    assert results == [x * x for x in range(20)]
    assert len(pulled) <= 20 + 8


def test_a_worker_that_dies_fails_only_its_call(remote):
    results = list(remote(die_on).starmap(((x, 5) for x in range(12)), return_exceptions=True))
    assert isinstance(results[5], WorkerCrashed)
    assert "exit code 7" in str(results[5])
    assert [r for i, r in enumerate(results) if i != 5] == [x for x in range(12) if x != 5]


def test_the_whole_maps_timeout_ends_it(remote):
    # 20 naps of 0.3 s on two workers take 3 s: the 1 s timeout ends it first.
    results = []
    with pytest.raises(CallTimeout):
        for value in remote(nap).map([0.3] * 20, timeout=1.0):
            results.append(value)
    assert results == [0.3] * len(results) and len(results) < 20


def test_the_decorators_timeout_bounds_each_call(remote):
    results = list(remote(nap, timeout=1.0).map([0.0, 5.0, 0.0], return_exceptions=True))
    assert results[0] == 0.0 and results[2] == 0.0
    assert isinstance(results[1], CallTimeout)


def test_progress_shows_a_bar_of_calls_done(remote, capsys):
    pytest.importorskip("tqdm")
    assert list(remote(square).map(range(30), progress=True)) == [x * x for x in range(30)]
    assert "30/30" in capsys.readouterr().err


def test_progress_without_tqdm_says_how_to_get_it(remote, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    with pytest.raises(ImportError, match="pip install tqdm"):
        remote(square).map(range(3), progress=True)


def test_bad_options_and_input_are_refused_before_anything_runs(remote):
    for window in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="window"):
            remote(square).map(range(3), window=window)
    with pytest.raises(ValueError, match="timeout"):
        remote(square).map(range(3), timeout=0)
    with pytest.raises(TypeError):
        remote(square).map(42)
    with pytest.raises(TypeError, match="unexpected keyword"):
        remote(add).starmap([(1, 2)], chunksize=4)


def test_an_argument_that_cannot_be_pickled_fails_at_its_place(remote):
    results = list(remote(pid).map([1, threading.Lock(), 3], return_exceptions=True))
    assert isinstance(results[1], SerializationError)
    assert isinstance(results[0], int) and isinstance(results[2], int)


def test_a_gateway_that_does_not_know_the_function_is_sent_it(start_gateway, monkeypatch):
    first, second = start_gateway(), start_gateway()
    function = compute_this()(square)
    monkeypatch.setenv("DISTRIBUTE_SERVER", first.url)
    assert function(3).run() == 9  # now sent by digest
    monkeypatch.setenv("DISTRIBUTE_SERVER", second.url)
    assert list(function.map(range(50), window=10)) == [x * x for x in range(50)]


def test_a_queue_smaller_than_the_window_only_slows_the_map(start_gateway):
    gateway = start_gateway("--queue-capacity", "2")
    results = compute_this(server=gateway.url)(square).map(range(200), window=50)
    assert list(results) == [x * x for x in range(200)]


def test_amap_runs_on_the_event_loop(remote):
    async def main():
        ordered = [x async for x in remote(square).amap(range(30))]
        unordered = [x async for x in remote(nap).amap([0.3, 0.0, 0.0], ordered=False)]
        starred = [x async for x in remote(add).astarmap([(1, 2), (3, 4)])]
        return ordered, unordered, starred

    ordered, unordered, starred = asyncio.run(main())
    assert ordered == [x * x for x in range(30)]
    assert unordered[-1] == 0.3
    assert starred == [3, 7]


def test_amap_takes_an_async_iterable(remote):
    async def numbers():
        for x in range(10):
            await asyncio.sleep(0)
            yield x

    async def main():
        return [x async for x in remote(square).amap(numbers(), window=3)]

    assert asyncio.run(main()) == [x * x for x in range(10)]


def test_cancelling_an_amap_task_starts_no_more_calls(remote, tmp_path):
    async def consume():
        async for _ in remote(mark).astarmap((str(tmp_path), x) for x in range(1000)):
            pass

    async def main():
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    time.sleep(0.5)
    started = len(os.listdir(tmp_path))
    time.sleep(0.5)
    assert len(os.listdir(tmp_path)) == started < 1000
    assert list(remote(square).map(range(4))) == [0, 1, 4, 9]


def test_an_unreachable_gateway_is_server_unavailable():
    import socket

    from distribute_challenge import ServerUnavailable

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"grpc://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(ServerUnavailable):
        list(compute_this(server=url)(square).map(range(3)))


def test_a_gateway_that_stops_ends_the_map_after_what_finished(start_gateway):
    import signal

    from distribute_challenge import ServerUnavailable

    gateway = start_gateway()
    results = []
    with pytest.raises(ServerUnavailable, match="shutting down"):
        for value in compute_this(server=gateway.url)(nap).map([0.2] * 40, window=4):
            results.append(value)
            if len(results) == 1:
                gateway.process.send_signal(signal.SIGTERM)
    # What was running when it stopped finished and came back; nothing was lost
    # in between, and the gateway stopped cleanly.
    assert results == [0.2] * len(results) and 1 <= len(results) < 40
    assert gateway.process.wait(30) == 0


def test_calls_no_worker_took_within_max_queue_wait_are_server_busy(start_gateway):
    from distribute_challenge import ServerBusy

    gateway = start_gateway("--workers", "1", "--max-queue-wait", "0.3")
    results = list(
        compute_this(server=gateway.url)(nap).map([1.0, 0.0, 0.0], return_exceptions=True)
    )
    # The first call holds the one worker past the others' wait: they were
    # refused (nothing ran), each at its place.
    assert results[0] == 1.0
    assert all(isinstance(result, ServerBusy) for result in results[1:]), results
    assert "max-queue-wait" in str(results[1])
    assert list(compute_this(server=gateway.url)(square).map(range(3))) == [0, 1, 4]


def test_the_function_travels_with_the_first_call_of_a_stream_only():
    from distribute_challenge import _mapping
    from mystic_wire import FUNCTION_MAGIC, REQUEST_MAGIC

    remote = compute_this(server="grpc://127.0.0.1:1")(square)  # nothing is sent here
    calls = _mapping.Calls(_mapping.plan(remote), _mapping.Settings(), None, items=False)
    for x in range(5):
        calls.add((x,), {})
    (message,) = calls.messages()
    magics = [payload[:4] for _, payload, _ in message]
    assert magics == [FUNCTION_MAGIC] + [REQUEST_MAGIC] * 4


def test_a_function_too_large_for_the_gateways_cache_still_maps(start_gateway):
    # The gateway cannot keep it, so after the first refusals every call of
    # the stream carries it; nothing fails.
    gateway = start_gateway("--function-cache-bytes", "1")
    ballast = bytes(range(256)) * 64

    def heavy(x):
        return x + len(ballast)

    results = compute_this(server=gateway.url)(heavy).map(range(300), window=20)
    assert list(results) == [x + len(ballast) for x in range(300)]


CLIENT = """
import sys, time
from distribute_challenge import compute_this

def nap(seconds):
    time.sleep(seconds)
    return seconds

for _ in compute_this(server=sys.argv[1])(nap).map([0.2] * 100):
    print("result", flush=True)
"""


def test_a_client_killed_mid_map_leaves_nothing_queued(start_gateway, tmp_path):
    import signal
    import subprocess

    gateway = start_gateway()
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    client = subprocess.Popen(
        [sys.executable, str(script), gateway.url], stdout=subprocess.PIPE, text=True
    )
    assert client.stdout.readline() == "result\n"  # the map is under way
    client.send_signal(signal.SIGKILL)
    client.wait()
    client.stdout.close()
    # The calls running finish; the ones queued are forgotten, never run.
    gateway.wait_for(_idle, "idle workers")
    served = gateway.calls_served()
    time.sleep(0.5)
    assert gateway.calls_served() == served < 100
    assert list(compute_this(server=gateway.url)(square).map(range(3))) == [0, 1, 4]


def _idle(gateway) -> bool:
    from distribute_challenge._pb import gateway_pb2

    return all(w.state == gateway_pb2.WORKER_STATE_IDLE for w in gateway.info().workers)
