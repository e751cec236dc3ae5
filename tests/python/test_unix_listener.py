"""``--listen unix:PATH``, on both transports: calls, ``get_workers()`` and
``get_gateways()`` over the socket; the file is 0600 and removed when the
gateway exits; a leftover socket is replaced, a live one, a regular file, a
missing directory and an over-long path are refused with the reason; the
token still applies; and idle connections are closed as on TCP.

Socket paths live in a short directory under /tmp (``sun_path`` holds 107
bytes; pytest's ``tmp_path`` can be longer than that)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading

import pytest
from system_state import wait_until

from distribute_challenge import AuthenticationError, ServerUnavailable, compute_this

TOKEN = "s3cret-token-for-unix-tests"
CONNECTED = "03"


def square(x):
    return x * x


def hold(seconds):
    import time

    time.sleep(seconds)
    return seconds


def hold_until(started, release):
    """Says it started, then waits (at most a minute) for ``release``."""
    import os
    import time

    open(started, "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)


def _ignore_errors(function):
    def run():
        try:
            function()
        except Exception:
            pass

    return run


@pytest.fixture
def socket_dir():
    """A short directory for sockets; ask for it before ``start_gateway``, so
    that it outlives the gateways (fixtures end in reverse order)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="mc-unix-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def no_env_token(monkeypatch):
    monkeypatch.delenv("DISTRIBUTE_TOKEN", raising=False)


def run_gateway(launcher, *flags: str) -> subprocess.CompletedProcess[str]:
    """Runs a gateway expected to refuse to start (or to fail starting)."""
    command = [str(launcher.binary), "--transport", launcher.transport, "--workers", "1"]
    if "--python" not in flags:
        command += ["--python", sys.executable]
    command += flags
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def accepted_connections(path: pathlib.Path) -> int:
    """Connections the gateway accepted on the socket at ``path``: in
    /proc/net/unix, accepted sockets carry the listener's path, connected."""
    count = 0
    for line in pathlib.Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 8 and fields[7] == str(path) and fields[5] == CONNECTED:
            count += 1
    return count


def test_calls_and_worker_counts_go_over_the_socket(socket_dir, start_gateway, transport):
    path = socket_dir / "gateway.sock"
    gateway = start_gateway("--listen", f"unix:{path}")
    assert gateway.url == f"unix:{path}"
    assert stat.S_ISSOCK(os.lstat(path).st_mode)

    remote = compute_this(server=gateway.url)(square)
    assert remote(7).run() == 49
    assert asyncio.run(remote(8).async_run()) == 64
    assert remote.get_workers() == 2
    (answer,) = remote.get_gateways()
    assert answer.error is None
    assert answer.info.transport == transport
    assert answer.target.url == gateway.url
    # The other spelling gRPC clients use.
    assert compute_this(server=f"unix://{path}")(square)(3).run() == 9


def test_relative_paths_are_each_sides_current_directory(socket_dir, start_gateway, monkeypatch):
    # The gateway runs in its own work directory: unix:gw.sock is there, and
    # the announce line gives it absolute.
    gateway = start_gateway("--listen", "unix:gw.sock")
    path = gateway.workdir / "gw.sock"
    assert gateway.url == f"unix:{path}"
    assert mode(path) == 0o600
    # The client's unix:gw.sock is its own current directory's, at each call.
    remote = compute_this(server="unix:gw.sock")(square)
    monkeypatch.chdir(gateway.workdir)
    assert remote(5).run() == 25
    monkeypatch.chdir(socket_dir)
    with pytest.raises(ServerUnavailable, match=re.escape(str(socket_dir / "gw.sock"))):
        remote(5).run()


def test_the_socket_is_owner_only_and_removed_on_sigterm(socket_dir, start_gateway):
    path = socket_dir / "gateway.sock"
    gateway = start_gateway("--listen", f"unix:{path}")
    assert mode(path) == 0o600
    assert compute_this(server=gateway.url)(square)(2).run() == 4
    assert gateway.stop() == 0
    assert not path.exists(), "the socket file outlived the gateway"
    assert "removed the socket" in gateway.log()


def test_a_second_signal_and_a_failed_start_remove_the_socket_too(launcher, socket_dir, tmp_path):
    path = socket_dir / "gateway.sock"
    # Not start_gateway: it insists on exit 0.
    gateway = launcher.start("--listen", f"unix:{path}", "--shutdown-grace", "600")
    try:
        started, release = tmp_path / "started", tmp_path / "never"
        remote = compute_this(server=gateway.url)(hold_until)
        caller = threading.Thread(target=_ignore_errors(remote(str(started), str(release)).run))
        caller.start()
        wait_until(started.exists, "the call to start")
        gateway.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "stopping" in gateway.log(), "the grace period to start")
        assert path.exists()
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(20) == 1
        caller.join(20)
    finally:
        gateway.stop(expect_clean=False)
    assert not path.exists(), "the socket file outlived a second signal"

    # Bound, then the workers cannot start: exit 1, and no file left behind.
    failed = run_gateway(launcher, "--listen", f"unix:{path}", "--python", "/nonexistent/python")
    assert failed.returncode == 1, failed.stderr
    assert "python" in failed.stderr
    assert not path.exists(), "the socket file outlived a failed start"


def test_a_leftover_socket_is_replaced(socket_dir, start_gateway):
    path = socket_dir / "gateway.sock"
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(path))
    leftover.close()  # the file stays; nothing listens on it
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    before = os.lstat(path)
    gateway = start_gateway("--listen", f"unix:{path}")
    after = os.lstat(path)
    assert (after.st_ino, mode(path)) != (before.st_ino, stat.S_IMODE(before.st_mode))
    assert mode(path) == 0o600
    assert compute_this(server=gateway.url)(square)(4).run() == 16
    assert "replaced the leftover socket" in gateway.log()


def test_a_live_socket_is_refused_and_its_gateway_keeps_serving(
    socket_dir, launcher, start_gateway
):
    path = socket_dir / "gateway.sock"
    first = start_gateway("--listen", f"unix:{path}")
    identity = os.lstat(path).st_ino
    second = run_gateway(launcher, "--listen", f"unix:{path}")
    assert second.returncode == 1, second.stderr
    assert "is in use by another gateway" in second.stderr
    assert str(path) in second.stderr
    assert second.stdout == ""
    assert os.lstat(path).st_ino == identity
    assert compute_this(server=first.url)(square)(9).run() == 81
    assert first.info().count == 2


def test_a_regular_file_is_refused_and_left_alone(launcher, socket_dir):
    path = socket_dir / "notes.txt"
    path.write_text("not a socket\n")
    result = run_gateway(launcher, "--listen", f"unix:{path}")
    assert result.returncode == 1, result.stderr
    assert "is a regular file, not a socket" in result.stderr
    assert path.read_text() == "not a socket\n"


def test_a_missing_directory_is_named(launcher, socket_dir):
    missing = socket_dir / "absent"
    result = run_gateway(launcher, "--listen", f"unix:{missing}/gateway.sock")
    assert result.returncode == 1, result.stderr
    assert f"the directory {missing} does not exist" in result.stderr
    assert not missing.exists()


def test_an_over_long_path_is_refused_naming_the_limit(launcher, socket_dir):
    path = socket_dir / ("s" * (108 - len(str(socket_dir)) - 1))
    assert len(str(path)) == 108
    result = run_gateway(launcher, "--listen", f"unix:{path}")
    assert result.returncode == 2, result.stderr
    assert "at most 107 bytes" in result.stderr
    assert not path.exists()


def test_the_token_still_applies_and_needs_no_opt_in(socket_dir, start_gateway, no_env_token):
    token_file = socket_dir / "token"
    token_file.write_text(TOKEN + "\n")
    path = socket_dir / "gateway.sock"
    gateway = start_gateway("--listen", f"unix:{path}", "--auth-token-file", str(token_file))

    right = compute_this(server=gateway.url, token=TOKEN)(square)
    assert right(11).run() == 121
    assert right.get_workers() == 2
    with pytest.raises(AuthenticationError):
        compute_this(server=gateway.url, token=TOKEN + "x")(square)(2).run()
    with pytest.raises(AuthenticationError):
        compute_this(server=gateway.url)(square)(2).run()
    with pytest.raises(AuthenticationError):
        compute_this(server=gateway.url, token="wrong")(square).get_workers()


def test_an_idle_connection_on_the_socket_is_closed(socket_dir, start_gateway):
    path = socket_dir / "gateway.sock"
    gateway = start_gateway("--listen", f"unix:{path}", "--idle-connection-timeout", "1")
    remote = compute_this(server=gateway.url)(hold)
    # Longer than the timeout: a call keeps its connection.
    assert remote(2.5).run() == 2.5
    assert accepted_connections(path) >= 1
    wait_until(lambda: accepted_connections(path) == 0, "the idle connection to be closed", 10)
    assert remote(0).run() == 0
    assert accepted_connections(path) >= 1
