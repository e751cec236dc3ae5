"""The gateway's own end, on both transports.

- SIGTERM with calls in flight: they finish with their results, the gateway
  exits 0, and it leaves nothing behind: no worker process, no segment.
- SIGKILL: the gateway cannot clean up, but its workers exit by themselves
  within seconds, and then nothing is left: the segments are memfds that
  live only while a process maps them, the doorbells socket pairs with no
  name, and nothing was ever put in ``/dev/shm`` or the runtime directory.
- A second SIGTERM stops at once, leaving nothing behind either.

Each test points ``$XDG_RUNTIME_DIR`` at its own directory, so that it can
check that the gateway leaves nothing there.
"""

from __future__ import annotations

import os
import pathlib
import signal
import threading
import time

import pytest
from system_state import process_alive, ring_segments, shm_entries, wait_until

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


def mapped_by_anyone(segments: set[int]) -> set[int]:
    """Which of ``segments`` some living process still maps."""
    held: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            held |= ring_segments(int(entry)) & segments
    return held


def test_sigterm_lets_in_flight_calls_finish_and_leaves_nothing(
    start_gateway, tmp_path, private_runtime_dir
):
    shm_before = shm_entries()
    gateway = start_gateway()
    pid = gateway.process.pid
    workers = gateway.worker_pids()
    assert all(process_alive(worker) for worker in workers)
    segments = ring_segments(pid)
    if gateway.transport == "shm":
        assert len(segments) == gateway.workers, "not looking where the segments are"
        assert all(len(ring_segments(worker)) == 1 for worker in workers)

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
    assert [worker for worker in workers if process_alive(worker)] == []
    assert mapped_by_anyone(segments) == set()
    assert shm_entries() <= shm_before
    assert list(private_runtime_dir.iterdir()) == []


def test_sigkill_workers_exit_by_themselves_and_leave_nothing(launcher, private_runtime_dir):
    shm_before = shm_entries()
    killed = launcher.start()  # not start_gateway: it would insist on exit status 0
    pid = killed.process.pid
    workers = killed.worker_pids()
    assert compute_this(server=killed.url)(abs)(-3).run() == 3
    segments = ring_segments(pid)
    if killed.transport == "shm":
        assert len(segments) == killed.workers
    killed.process.kill()
    assert killed.process.wait(30) == -signal.SIGKILL

    wait_until(
        lambda: not any(process_alive(worker) for worker in workers),
        "the workers of a killed gateway to exit",
        timeout=WORKERS_EXIT_WITHIN,
    )
    # Nothing to clean up: the memory went with the last process mapping it.
    assert mapped_by_anyone(segments) == set()
    assert shm_entries() <= shm_before
    assert list(private_runtime_dir.iterdir()) == []


def test_a_second_sigterm_stops_at_once_and_still_leaves_nothing(
    launcher, tmp_path, private_runtime_dir
):
    shm_before = shm_entries()
    # A grace period far past the waits below: only the second signal ends it.
    gateway = launcher.start("--shutdown-grace", "600")  # not start_gateway: it insists on exit 0
    workers = gateway.worker_pids()
    segments = ring_segments(gateway.process.pid)
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
    gateway.process.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping" in gateway.log(), "the first signal's grace period to start")
    gateway.process.send_signal(signal.SIGTERM)
    status = gateway.process.wait(20)
    caller.join(20)

    assert status != 0
    assert "cut off" in gateway.log(), gateway._tail()
    assert len(outcome) == 1 and isinstance(outcome[0], Exception), outcome
    wait_until(
        lambda: not any(process_alive(worker) for worker in workers),
        "the workers to be stopped",
        timeout=WORKERS_EXIT_WITHIN,
    )
    assert mapped_by_anyone(segments) == set()
    assert shm_entries() <= shm_before
    assert list(private_runtime_dir.iterdir()) == []
