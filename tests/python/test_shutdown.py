"""The gateway's own end, on both transports.

- SIGTERM with calls in flight: they finish with their results, the gateway
  exits 0, and it leaves nothing behind: no ``/dev/shm/mystic-<pid>-*``
  segment, no runtime directory (doorbell sockets), no worker process.
- SIGKILL: the gateway cannot clean up, but its workers exit by themselves
  within seconds, and the next gateway removes what the killed one left
  (its segments and its runtime directory).

Each test points ``$XDG_RUNTIME_DIR`` at its own directory, so that the
runtime directories it checks are its gateways' alone.
"""

from __future__ import annotations

import os
import pathlib
import signal
import threading
import time

import pytest
from system_state import process_alive, runtime_dir, segments, wait_until

from distribute_challenge import compute_this

# Generous: the machine may be loaded. Workers die with the gateway at once
# (PR_SET_PDEATHSIG), so this only bounds a failure.
WORKERS_EXIT_WITHIN = 20.0


def hold(started, release, value):
    """Runs until the test creates ``release``."""
    pathlib.Path(started).touch()
    while not os.path.exists(release):
        time.sleep(0.01)
    return value


@pytest.fixture(autouse=True)
def private_runtime_dir(tmp_path, monkeypatch):
    base = tmp_path / "xdg"
    base.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    return base


def test_sigterm_lets_in_flight_calls_finish_and_leaves_nothing(start_gateway, tmp_path):
    gateway = start_gateway()
    pid = gateway.process.pid
    workers = gateway.worker_pids()
    assert all(process_alive(worker) for worker in workers)
    if gateway.transport == "shm":
        assert len(segments(pid)) == gateway.workers, "not looking where the segments are"
        assert runtime_dir(pid).is_dir(), "not looking where the runtime directory is"

    release = tmp_path / "release"
    remote = compute_this(server=gateway.url)(hold)
    results: dict[int, object] = {}

    def run(index):
        started = tmp_path / f"started-{index}"
        try:
            results[index] = remote(str(started), str(release), index).run()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(gateway.workers)]
    for thread in threads:
        thread.start()
    try:
        for index in range(gateway.workers):
            started = tmp_path / f"started-{index}"
            wait_until(started.exists, f"call {index} to start")
        gateway.process.send_signal(signal.SIGTERM)
    finally:
        release.touch()
        for thread in threads:
            thread.join(60)
    status = gateway.process.wait(60)

    assert results == {index: index for index in range(gateway.workers)}
    assert status == 0, f"exit status {status}{gateway._tail()}"
    assert segments(pid) == set()
    assert not runtime_dir(pid).exists()
    assert [worker for worker in workers if process_alive(worker)] == []


def test_sigkill_workers_exit_by_themselves_and_the_next_gateway_cleans_up(launcher, start_gateway):
    killed = launcher.start()  # not start_gateway: it would insist on exit status 0
    pid = killed.process.pid
    workers = killed.worker_pids()
    assert compute_this(server=killed.url)(abs)(-3).run() == 3
    if killed.transport == "shm":
        assert len(segments(pid)) == killed.workers
    killed.process.kill()
    assert killed.process.wait(30) == -signal.SIGKILL

    wait_until(
        lambda: not any(process_alive(worker) for worker in workers),
        "the workers of a killed gateway to exit",
        timeout=WORKERS_EXIT_WITHIN,
    )
    if killed.transport == "shm":
        # Only gateways of this test use this runtime base: the directory is
        # still there. (The segments too, unless another gateway on this
        # machine, of another test run, already removed them.)
        assert runtime_dir(pid).is_dir(), "a killed gateway cannot clean up"

    successor = start_gateway()
    assert segments(pid) == set(), "the next gateway removes stale segments"
    assert not runtime_dir(pid).exists(), "the next gateway removes stale runtime directories"
    assert compute_this(server=successor.url)(abs)(-4).run() == 4


def test_a_second_sigterm_stops_at_once_and_still_leaves_nothing(launcher, tmp_path):
    gateway = launcher.start()  # not start_gateway: it would insist on exit status 0
    pid = gateway.process.pid
    workers = gateway.worker_pids()
    started, release = tmp_path / "started", tmp_path / "never"
    remote = compute_this(server=gateway.url)(hold)
    outcome: list[BaseException | object] = []

    def run():
        try:
            outcome.append(remote(str(started), str(release), "done").run())
        except Exception as exc:
            outcome.append(exc)

    caller = threading.Thread(target=run)
    caller.start()
    wait_until(started.exists, "the call to start")
    begun = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the first signal starts the 30 s grace period
    gateway.process.send_signal(signal.SIGTERM)
    status = gateway.process.wait(20)
    caller.join(20)

    assert time.monotonic() - begun < 15, "the second signal did not cut the grace period short"
    assert status != 0
    assert "cut off" in gateway.log(), gateway._tail()
    assert len(outcome) == 1 and isinstance(outcome[0], Exception), outcome
    assert segments(pid) == set()
    assert not runtime_dir(pid).exists()
    wait_until(
        lambda: not any(process_alive(worker) for worker in workers),
        "the workers to be stopped",
        timeout=WORKERS_EXIT_WITHIN,
    )
