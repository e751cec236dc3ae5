"""What a careless or hostile function can do to the gateway, on both
transports: a function that forks and then crashes is reported at once and
its children do not outlive it."""

from __future__ import annotations

import ctypes
import os
import time

import pytest
from system_state import process_alive, wait_until

from distribute_challenge import WorkerCrashed, compute_this


def fork_then_crash(pid_file):
    """Forks a child that would sleep for a minute holding every inherited
    descriptor (the protocol's among them), then segfaults."""
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    with open(pid_file, "w") as file:
        file.write(str(child))
    ctypes.string_at(0)


@pytest.fixture(scope="module")
def crashing(launcher):
    """A gateway of its own: these tests crash its workers."""
    gateway = launcher.start()
    yield gateway
    launcher.stop(gateway)


def test_a_crash_is_reported_at_once_and_the_functions_children_are_ended(crashing, tmp_path):
    pid_file = tmp_path / "child.pid"
    call = compute_this(server=crashing.url)(fork_then_crash)(str(pid_file))
    started = time.monotonic()
    with pytest.raises(WorkerCrashed, match=r"signal 11 \(SIGSEGV\)"):
        call.run()
    # The child holds the pipes or the doorbell for a minute: the crash was
    # seen from the exit itself, not from the channel closing.
    assert time.monotonic() - started < 10
    child = int(pid_file.read_text())
    wait_until(lambda: not process_alive(child), "the crashed worker's child to be ended", 5)
    assert compute_this(server=crashing.url)(os.getpid)().run() in crashing.worker_pids()
