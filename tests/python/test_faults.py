"""Workers that die or hang: the caller gets WorkerCrashed / CallTimeout naming
the cause, the gateway replaces the worker, and later calls succeed. A hung
worker here is one that stopped itself with SIGSTOP: only a deadline (the
client's or the gateway's ``--call-timeout``) catches it."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time

import pytest
from system_state import process_alive, wait_until

from distribute_challenge import CallTimeout, WorkerCrashed, compute_this


def exit_3():
    os._exit(3)


def segfault():
    ctypes.string_at(0)


def sigkill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def stop_self():
    os.kill(os.getpid(), signal.SIGSTOP)
    return "resumed"


def sleep_then_return(seconds):
    time.sleep(seconds)
    return seconds


def pid():
    return os.getpid()


@pytest.fixture(scope="module")
def faulty(launcher):
    """A gateway of its own: these tests kill its workers."""
    gateway = launcher.start()
    yield gateway
    launcher.stop(gateway)


def _recovered(gateway, restarts_before):
    gateway.wait_for(lambda g: g.restarts() > restarts_before, "the worker to be restarted")
    on = compute_this(server=gateway.url)
    for _ in range(6):
        assert on(sleep_then_return)(0).run() == 0
    assert on(pid)().run() in gateway.worker_pids()


@pytest.mark.parametrize(
    ("function", "cause"),
    [
        (exit_3, "exit code 3"),
        (segfault, "signal 11 (SIGSEGV)"),
        (sigkill_self, "signal 9 (SIGKILL)"),
    ],
    ids=["exit-3", "segfault", "sigkill"],
)
def test_a_worker_death_is_worker_crashed(faulty, function, cause):
    restarts = faulty.restarts()
    pids = faulty.worker_pids()
    with pytest.raises(WorkerCrashed, match=cause.replace("(", r"\(").replace(")", r"\)")):
        compute_this(server=faulty.url)(function)().run()
    _recovered(faulty, restarts)
    assert faulty.worker_pids() != pids


def test_a_worker_death_during_async_run_is_worker_crashed(faulty):
    restarts = faulty.restarts()
    with pytest.raises(WorkerCrashed, match="exit code 3"):
        asyncio.run(compute_this(server=faulty.url)(exit_3)().async_run())
    _recovered(faulty, restarts)


def test_the_client_timeout_is_call_timeout_and_the_worker_is_replaced(faulty):
    restarts = faulty.restarts()
    started = time.monotonic()
    with pytest.raises(CallTimeout):
        compute_this(server=faulty.url, timeout=1)(sleep_then_return)(10).run()
    assert time.monotonic() - started < 8  # a hang check, not a performance claim
    _recovered(faulty, restarts)


def test_the_gateway_call_timeout_is_call_timeout(start_gateway):
    gateway = start_gateway("--call-timeout", "1")
    restarts = gateway.restarts()
    with pytest.raises(CallTimeout, match="deadline"):
        compute_this(server=gateway.url)(sleep_then_return)(10).run()
    _recovered(gateway, restarts)
    assert compute_this(server=gateway.url)(sleep_then_return)(0.1).run() == 0.1


@pytest.mark.parametrize("deadline", ["client-timeout", "gateway-call-timeout"])
def test_a_stopped_worker_is_call_timeout_and_is_replaced(start_gateway, deadline):
    if deadline == "client-timeout":
        gateway = start_gateway()
        stopper = compute_this(server=gateway.url, timeout=1)(stop_self)
    else:
        gateway = start_gateway("--call-timeout", "1")
        stopper = compute_this(server=gateway.url)(stop_self)
    pids = gateway.worker_pids()
    with pytest.raises(CallTimeout):
        stopper().run()
    _recovered(gateway, 0)
    assert gateway.restarts() == 1
    (stopped,) = pids - gateway.worker_pids()
    # Killed (SIGKILL ends a stopped process too) and reaped, not left stopped.
    wait_until(lambda: not process_alive(stopped), f"the stopped worker {stopped} to go")
