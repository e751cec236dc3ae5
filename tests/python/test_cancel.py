"""Calls cancelled by their client, on a gateway with one worker.

- A running call (cancelled with ``asyncio`` or with gRPC's own
  ``future.cancel()``): the worker finishes it, the result is discarded, and
  the same worker process serves the next call (no restart).
- A call still in the queue: it never runs (the marker file it would write
  never appears).

Marker files written by the functions tell the test what ran in the worker.
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

from distribute_challenge import ServerBusy, _client, _gateways, compute_this
from distribute_challenge._pb import gateway_pb2
from distribute_challenge._target import parse_server
from mystic_wire import encode_request

# The workers cannot import this module, so its functions travel by value, as
# the client arranges for such modules (distribute_challenge._by_value).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def touch_and_sleep(started, finished, seconds):
    pathlib.Path(started).touch()
    time.sleep(seconds)
    pathlib.Path(finished).touch()
    return os.getpid()


def hold(started, release):
    """Occupies the worker until the test creates ``release``."""
    pathlib.Path(started).touch()
    while not os.path.exists(release):
        time.sleep(0.01)
    return "released"


def touch(path):
    pathlib.Path(path).touch()
    return path


def pid():
    return os.getpid()


async def _exists(path: pathlib.Path, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("how", ["asyncio-cancel", "grpc-future-cancel"])
def test_a_running_call_cancelled_by_its_client_keeps_its_worker(start_gateway, tmp_path, how):
    gateway = start_gateway("--workers", "1")
    (worker,) = gateway.worker_pids()
    started, finished = tmp_path / "started", tmp_path / "finished"
    args = (str(started), str(finished), 1.0)

    if how == "asyncio-cancel":

        async def cancel_while_running():
            call = compute_this(server=gateway.url)(touch_and_sleep)(*args)
            task = asyncio.create_task(call.async_run())
            await _exists(started, "the call to start")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancel_while_running())
    else:
        payload = encode_request(touch_and_sleep, args, {}, ())
        future = gateway.stub().Execute.future(gateway_pb2.ExecuteRequest(payload=payload))
        gateway.wait_for(lambda g: started.exists(), "the call to start")
        assert future.cancel()
        assert future.cancelled()

    # The worker ran the call to its end; its result went nowhere.
    gateway.wait_for(lambda g: finished.exists(), "the cancelled call to finish in the worker")
    gateway.wait_for(lambda g: g.calls_served() == 1, "the cancelled call to be counted")
    assert compute_this(server=gateway.url)(pid)().run() == worker
    assert gateway.worker_pids() == {worker}
    assert gateway.restarts() == 0


def test_a_queued_call_cancelled_by_its_client_never_runs(start_gateway, tmp_path):
    gateway = start_gateway("--workers", "1", "--queue-capacity", "1")
    (worker,) = gateway.worker_pids()
    release = tmp_path / "release"
    on = compute_this(server=gateway.url)
    running: list[str] = []
    holder = threading.Thread(
        target=lambda: running.append(on(hold)(str(tmp_path / "running"), str(release)).run())
    )
    holder.start()
    try:
        gateway.wait_for(lambda g: (tmp_path / "running").exists(), "the first call to start")

        async def cancel_in_queue():
            # Two calls that may not retry race for the only queue slot while
            # the worker is held: the one not refused is in the queue.
            no_retry = compute_this(server=gateway.url, busy_timeout=0)(touch)
            markers = {name: tmp_path / name for name in ("a", "b")}
            tasks = {
                name: asyncio.create_task(no_retry(str(marker)).async_run())
                for name, marker in markers.items()
            }
            done, pending = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
            (refused,) = done
            (queued,) = pending
            with pytest.raises(ServerBusy):
                refused.result()
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            # A round trip on the same connection: the cancellation has reached
            # the gateway before the worker is released.
            client = _client.client(parse_server(gateway.url))
            answer = await _client.run_on_loop(client.get_workers_async, (), 30)
            info = _gateways.workers_info(answer)
            assert [w.pid for w in info.workers] == [worker]
            return markers

        markers = asyncio.run(_with_release_after(cancel_in_queue(), release))
    finally:
        release.touch()
        holder.join(60)
    assert running == ["released"]
    # The worker is free again and the queue is empty: the call that followed
    # the cancelled one in the queue ran, the cancelled one did not.
    assert on(pid)().run() == worker
    for name, marker in markers.items():
        assert not marker.exists(), f"call {name} ran although it never started or was cancelled"
    assert gateway.restarts() == 0


async def _with_release_after(scenario, release: pathlib.Path):
    try:
        return await scenario
    finally:
        release.touch()
