"""The client and the gateway as a service: addresses, unreachable servers,
GetWorkers, health, and the original challenge's test.py."""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket
import subprocess
import sys
import time
import traceback

import pytest

from distribute_challenge import ServerUnavailable, compute_this

REPO = pathlib.Path(__file__).resolve().parents[2]


def square(x):
    return x * x


@pytest.fixture
def dead_server():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"grpc://127.0.0.1:{port}"


def test_an_unreachable_server_is_server_unavailable(dead_server):
    function = compute_this(server=dead_server)(square)
    for attempt in (
        lambda: function(2).run(),
        lambda: asyncio.run(function(2).async_run()),
        function.get_workers,
    ):
        started = time.monotonic()
        with pytest.raises(ServerUnavailable, match=dead_server):
            attempt()
        assert time.monotonic() - started < 10  # a hang check, not a performance claim


def test_get_workers_counts_the_pool(remote, gateway):
    assert remote(square).get_workers() == 2
    info = gateway.info()
    assert info.count == 2
    assert info.transport == gateway.transport
    assert [worker.index for worker in info.workers] == [0, 1]
    assert all(worker.pid > 0 for worker in info.workers)


def test_the_server_comes_from_the_environment_at_call_time(server, monkeypatch):
    function = compute_this()(square)
    monkeypatch.setenv("DISTRIBUTE_SERVER", server)
    assert function(12).run() == 144
    monkeypatch.setenv("DISTRIBUTE_SERVER", server.removeprefix("grpc://"))
    assert function(3).run() == 9


def test_a_token_is_sent_without_harm(remote):
    assert remote(square, token="secret")(5).run() == 25


def test_calls_work_after_fork(remote):
    function = remote(square)
    assert function(2).run() == 4
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os._exit(0 if function(9).run() == 81 else 1)
        except BaseException:
            traceback.print_exc()
            os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert function(3).run() == 9


def test_the_challenge_test_py_passes(server):
    result = subprocess.run(
        [sys.executable, str(REPO / "test.py")],
        env={**os.environ, "DISTRIBUTE_SERVER": server},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "success"
