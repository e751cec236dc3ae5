"""``Executor``: the gateway's workers as a ``concurrent.futures.Executor``,
against real gateways on both transports.

- ``submit``: a ``Future`` with the result; a keyword named ``fn`` reaches
  the function; builtins, lambdas, closures and ``__main__`` functions.
- ``map``: results in order (zipped, the shortest input), a call's exception
  at its place, ``timeout`` counted from the call to ``map``, no reference
  kept to a result once yielded, ``chunksize`` accepted.
- ``shutdown``: waits, refuses new calls (the ``with`` block too);
  ``cancel_futures`` cancels what has not been answered.
- ``wait``, ``as_completed`` and ``asyncio``'s ``run_in_executor``.
- A future stays pending until its call is sent, and cancelling it then
  keeps the call from ever being sent; at most ``max_in_flight`` calls are
  sent (the others wait in the executor); cancelling a sent call that waits
  in the gateway's queue withdraws it (it never runs), while one a worker
  has started runs to its end and its outcome is dropped. The gateway's
  ``/metrics`` (queue depth, calls whose caller left) and ``GetWorkers``
  (calls served) show what reached it; marker files what ran.
- The function's exception with its type and remote traceback; a worker
  that dies raises ``WorkerCrashed``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import pathlib
import re
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
import weakref

import pytest

from distribute_challenge import Executor, WorkerCrashed, compute_this


def square(x):
    return x * x


def keywords(**kwargs):
    return kwargs


def nap(seconds, value=None):
    time.sleep(seconds)
    return seconds if value is None else value


def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def divide(a, b):
    return a / b


def die():
    os._exit(3)


def hold(started, release, done):
    """Occupies a worker until the test creates ``release``."""
    pathlib.Path(started).touch()
    while not os.path.exists(release):
        time.sleep(0.01)
    pathlib.Path(done).touch()
    return "released"


def touch(path):
    pathlib.Path(path).touch()
    return path


def pid():
    return os.getpid()


class Box:
    def __init__(self, value):
        self.value = value


def boxed_after(seconds, value):
    time.sleep(seconds)
    return Box(value)


# -- submit ------------------------------------------------------------------------


def test_submit_returns_a_future_with_the_result(server):
    with Executor(server) as executor:
        future = executor.submit(square, 7)
        assert isinstance(future, concurrent.futures.Future)
        assert future.result(timeout=30) == 49
        assert future.done() and not future.cancelled()


def test_a_keyword_named_fn_reaches_the_function(server):
    with Executor(server) as executor:
        future = executor.submit(keywords, fn="mine", other=1)
        assert future.result(timeout=30) == {"fn": "mine", "other": 1}


def test_builtins_lambdas_and_closures_run(server):
    offset = 100

    def shifted(x):
        return x + offset

    with Executor(server) as executor:
        assert executor.submit(pow, 2, 10).result(timeout=30) == 1024
        assert executor.submit(lambda x: x * 3, 5).result(timeout=30) == 15
        assert executor.submit(shifted, 1).result(timeout=30) == 101
        # The same closure again: sent by digest, the same answer.
        assert executor.submit(shifted, 2).result(timeout=30) == 102


def test_main_functions_travel_by_value(server):
    script = (
        "import sys\n"
        "from distribute_challenge import Executor\n"
        "def triple(x):\n"
        "    return 3 * x\n"
        "with Executor(sys.argv[1]) as executor:\n"
        "    print(executor.submit(triple, 5).result(timeout=30),\n"
        "          list(executor.map(triple, [1, 2])))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, server], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["15", "[3,", "6]"]


# -- map ---------------------------------------------------------------------------


def test_map_yields_in_order_over_the_shortest_input(server):
    with Executor(server) as executor:
        # The first call finishes last; its result still comes first.
        results = executor.map(nap, [0.3, 0.0, 0.1, 0.0], ["a", "b", "c"])
        assert list(results) == ["a", "b", "c"]
        assert list(executor.map(square, range(50))) == [x * x for x in range(50)]
        assert list(executor.map(square, [])) == []


def test_map_raises_a_call_s_exception_at_its_place(server):
    with Executor(server) as executor:
        results = executor.map(fail_on, range(6), [3] * 6)
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError, match="bad item 3"):
            next(results)
        with pytest.raises(StopIteration):
            next(results)


def test_map_s_timeout_counts_from_the_call_to_map(server):
    with Executor(server) as executor:
        # The second result comes about 2 s after map; the deadline is 1 s
        # after it. Counted from each next() (at 1.5 s) it would be met.
        results = executor.map(nap, [0.0, 2.0], timeout=1.0)
        time.sleep(1.5)
        assert next(results) == 0.0  # there already: returned, late or not
        with pytest.raises(TimeoutError):
            next(results)


def test_map_keeps_no_reference_to_a_result_it_has_yielded(server):
    with Executor(server) as executor:
        results = executor.map(boxed_after, [0.0, 1.0], ["first", "second"])
        first = next(results)
        assert first.value == "first"
        gone = weakref.ref(first)
        del first
        gc.collect()
        # The second call is still running: the iterator is alive and waiting.
        assert gone() is None
        assert next(results).value == "second"


def test_map_takes_a_chunksize(server):
    with Executor(server) as executor:
        assert list(executor.map(square, range(10), chunksize=4)) == [x * x for x in range(10)]
        with pytest.raises(ValueError, match="chunksize"):
            executor.map(square, range(10), chunksize=0)


# -- shutdown ----------------------------------------------------------------------


def test_shutdown_waits_for_every_call_then_refuses_more(server):
    executor = Executor(server)
    submitted = executor.submit(nap, 0.5, "slept")
    mapped = executor.map(nap, [0.3, 0.3], ["x", "y"])
    executor.shutdown(wait=True)
    assert submitted.done() and submitted.result() == "slept"
    assert list(mapped) == ["x", "y"]
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(square, 2)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.map(square, [2])
    executor.shutdown()  # again: nothing to do


def test_the_with_block_shuts_down(server):
    with Executor(server) as executor:
        future = executor.submit(nap, 0.3, "slept")
    assert future.done() and future.result() == "slept"
    with pytest.raises(RuntimeError):
        executor.submit(square, 2)


def test_shutdown_can_cancel_every_call_not_yet_answered(start_gateway, tmp_path):
    gateway = start_gateway("--workers", "1")
    files = _Files(tmp_path)
    executor = Executor(gateway.url, max_in_flight=2)
    running = executor.submit(hold, *files.hold)
    gateway.wait_for(lambda g: files.started.exists(), "the first call to start")
    later = [executor.submit(touch, str(files.marker(n))) for n in range(3)]
    executor.shutdown(wait=False, cancel_futures=True)
    assert all(future.cancelled() for future in [running, *later])
    files.release.touch()
    executor.shutdown(wait=True)
    # The call a worker had started ran to its end; the others never ran
    # (the next call, queued after whatever was left, shows the queue empty).
    gateway.wait_for(lambda g: files.done.exists(), "the running call to finish")
    assert compute_this(server=gateway.url)(pid)().run() in gateway.worker_pids()
    assert not any(files.marker(n).exists() for n in range(3))
    gateway.wait_for(lambda g: g.calls_served() == 2, "the two calls that ran to be counted")


# -- wait, as_completed, run_in_executor --------------------------------------------


def test_futures_work_with_wait_and_as_completed(server):
    with Executor(server) as executor:
        futures = [executor.submit(nap, seconds, n) for n, seconds in enumerate([0.5, 0.0, 0.2])]
        done, _ = concurrent.futures.wait(
            futures, timeout=30, return_when=concurrent.futures.FIRST_COMPLETED
        )
        assert done and done <= set(futures)
        finished = list(concurrent.futures.as_completed(futures, timeout=30))
        assert set(finished) == set(futures)
        assert sorted(future.result() for future in finished) == [0, 1, 2]
        done, not_done = concurrent.futures.wait(futures, timeout=30)
        assert done == set(futures) and not not_done


def test_futures_work_with_run_in_executor(server):
    async def main(executor):
        loop = asyncio.get_running_loop()
        calls = [loop.run_in_executor(executor, square, x) for x in range(5)]
        return await asyncio.gather(*calls)

    with Executor(server) as executor:
        assert asyncio.run(main(executor)) == [0, 1, 4, 9, 16]


# -- pending, in flight, cancelled ---------------------------------------------------


def test_a_future_is_pending_until_sent_and_cancelling_it_then_keeps_it_from_the_gateway(
    start_gateway, tmp_path
):
    port = _free_port()
    gateway = start_gateway("--workers", "1", "--metrics-listen", f"127.0.0.1:{port}")
    files = _Files(tmp_path)
    with Executor(gateway.url, max_in_flight=1) as executor:
        holder = executor.submit(hold, *files.hold)
        gateway.wait_for(lambda g: files.started.exists(), "the first call to start")
        waiting = executor.submit(touch, str(files.marker(0)))
        assert not waiting.running() and not waiting.done()
        assert _metric(port, "mystic_queue_depth") == 0  # not sent: the bound is 1
        assert waiting.cancel()
        assert waiting.cancelled()
        # wait() sees the cancellation at once, not when the call would have gone.
        done, _ = concurrent.futures.wait([waiting], timeout=30)
        assert done == {waiting}
        files.release.touch()
        assert holder.result(timeout=30) == "released"
        assert executor.submit(pid).result(timeout=30) in gateway.worker_pids()
    assert not files.marker(0).exists()
    gateway.wait_for(lambda g: g.calls_served() == 2, "the two calls that ran to be counted")
    # The gateway never heard of it.
    assert _metric(port, 'mystic_rejected_calls_total{reason="caller-left"}') == 0


def test_at_most_max_in_flight_calls_are_sent(start_gateway, tmp_path):
    port = _free_port()
    gateway = start_gateway("--workers", "1", "--metrics-listen", f"127.0.0.1:{port}")
    files = _Files(tmp_path)
    with Executor(gateway.url, max_in_flight=2) as executor:
        holder = executor.submit(hold, *files.hold)
        gateway.wait_for(lambda g: files.started.exists(), "the first call to start")
        later = [executor.submit(touch, str(files.marker(n))) for n in range(4)]
        gateway.wait_for(lambda g: _metric(port, "mystic_queue_depth") >= 1, "a call queued")
        # One running, one in the gateway's queue; three wait in the executor.
        assert _metric(port, "mystic_queue_depth") == 1
        assert not any(future.done() for future in later)
        files.release.touch()
        assert holder.result(timeout=30) == "released"
        assert [future.result(timeout=30) for future in later] == [
            str(files.marker(n)) for n in range(4)
        ]


def test_cancelling_a_queued_call_withdraws_it_from_the_gateway(start_gateway, tmp_path):
    port = _free_port()
    gateway = start_gateway("--workers", "1", "--metrics-listen", f"127.0.0.1:{port}")
    files = _Files(tmp_path)
    with Executor(gateway.url) as executor:
        holder = executor.submit(hold, *files.hold)
        gateway.wait_for(lambda g: files.started.exists(), "the first call to start")
        queued = executor.submit(touch, str(files.marker(0)))
        gateway.wait_for(
            lambda g: _metric(port, "mystic_queue_depth") == 1, "the call in the gateway's queue"
        )
        assert not queued.done()
        assert queued.cancel()
        # The call's task has ended on the executor's loop (its cancellation
        # handed to the client), then a round trip on the same connection:
        # the withdrawal has reached the gateway before the worker is freed.
        gateway.wait_for(lambda g: queued not in executor._sent, "the call's task to end")
        assert executor.get_workers() == 1
        files.release.touch()
        assert holder.result(timeout=30) == "released"
        # Queued after the withdrawn call, on the same connection: it runs
        # once the worker has passed the withdrawn one by.
        assert executor.submit(pid).result(timeout=30) in gateway.worker_pids()
    assert queued.cancelled()
    assert not files.marker(0).exists()
    gateway.wait_for(lambda g: g.calls_served() == 2, "the two calls that ran to be counted")
    assert _metric(port, 'mystic_rejected_calls_total{reason="caller-left"}') == 1


def test_a_started_call_cancelled_runs_to_its_end_and_its_outcome_is_dropped(
    start_gateway, tmp_path
):
    gateway = start_gateway("--workers", "1")
    files = _Files(tmp_path)
    with Executor(gateway.url) as executor:
        running = executor.submit(hold, *files.hold)
        gateway.wait_for(lambda g: files.started.exists(), "the call to start")
        assert running.cancel()
        files.release.touch()
        gateway.wait_for(lambda g: files.done.exists(), "the cancelled call to finish")
        assert executor.submit(pid).result(timeout=30) in gateway.worker_pids()
    assert running.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        running.result()
    assert gateway.restarts() == 0


# -- failures ----------------------------------------------------------------------


def test_the_function_s_exception_keeps_its_type_and_remote_traceback(server):
    with Executor(server) as executor:
        future = executor.submit(divide, 1, 0)
        error = future.exception(timeout=30)
        assert type(error) is ZeroDivisionError
        with pytest.raises(ZeroDivisionError):
            future.result()
    text = "".join(traceback.format_exception(error))
    assert f"line {divide.__code__.co_firstlineno + 1}, in divide" in text
    assert __file__ in text


def test_a_worker_that_dies_raises_worker_crashed(server):
    with Executor(server) as executor:
        with pytest.raises(WorkerCrashed):
            executor.submit(die).result(timeout=60)
        assert executor.submit(square, 3).result(timeout=30) == 9


# -- helpers -----------------------------------------------------------------------


class _Files:
    """The marker files of one test: ``hold``'s, and one per later call."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self.started = directory / "started"
        self.release = directory / "release"
        self.done = directory / "done"
        self.hold = (str(self.started), str(self.release), str(self.done))

    def marker(self, n: int) -> pathlib.Path:
        return self.directory / f"ran-{n}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _metric(port: int, series: str) -> float:
    """One series of the gateway's ``/metrics`` (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0
