"""Connections, on both transports: a connection must earn its place.

- With ``--idle-connection-timeout``, a connection with no call is closed with
  a GOAWAY and the client reconnects on its next call; a call that runs
  longer than the timeout is not cut off.
- Connections that send nothing (or only the HTTP/2 preface) are closed at
  ``--handshake-timeout``: however many there are, they cannot keep a client
  with the token out for long.
- The gateway raises its open-files limit to the hard limit at start-up.
"""

from __future__ import annotations

import pathlib
import re
import resource
import socket
import struct
import time

import pytest
from system_state import wait_until

from distribute_challenge import compute_this

ESTABLISHED = "01"
TOKEN = "connections-test-token"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# HTTP/2 frame types and flags (RFC 9113, section 6).
DATA, HEADERS, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def connections_to(url: str) -> int:
    """Established TCP connections whose local end is the gateway's port."""
    port = f"{int(url.rsplit(':', 1)[1]):04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port}") and fields[3] == ESTABLISHED:
                count += 1
    return count


def hold(seconds):
    time.sleep(seconds)
    return seconds


def double(x):
    return 2 * x


def test_an_idle_connection_is_closed_but_a_long_call_is_not(start_gateway):
    gateway = start_gateway("--idle-connection-timeout", "1")
    remote = compute_this(server=gateway.url)(hold)
    # Longer than the timeout, with no byte crossing meanwhile.
    assert remote(2.5).run() == 2.5
    assert connections_to(gateway.url) >= 1
    # Idle now: the gateway closes the connection.
    wait_until(lambda: connections_to(gateway.url) == 0, "the idle connection to be closed", 10)
    # The same channel reconnects for the next call.
    assert remote(0).run() == 0
    assert connections_to(gateway.url) >= 1


@pytest.fixture
def token_file(tmp_path, monkeypatch):
    monkeypatch.delenv("DISTRIBUTE_TOKEN", raising=False)
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def closed_by_peer(sock: socket.socket) -> bool:
    """Reads what is left on ``sock``; whether the other end has closed it."""
    sock.settimeout(0.05)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:  # reset: closed with our bytes unread
        return True
    return True


def test_silent_connections_cannot_keep_a_client_with_the_token_out(start_gateway, token_file):
    gateway = start_gateway(
        "--auth-token-file",
        str(token_file),
        "--max-connections",
        "8",
        "--handshake-timeout",
        "1",
    )
    host, port = gateway.url.removeprefix("grpc://").rsplit(":", 1)
    silent = [socket.create_connection((host, int(port))) for _ in range(24)]
    preface_only = [socket.create_connection((host, int(port))) for _ in range(4)]
    for sock in preface_only:
        sock.sendall(PREFACE)
    try:
        # Behind 28 connections for 8 places, each closed at the handshake
        # deadline: answered well before the 20 s a client waits to connect.
        remote = compute_this(server=gateway.url, token=TOKEN, timeout=12)(double)
        assert remote(21).run() == 42
        left = silent + preface_only
        wait_until(
            lambda: all([closed_by_peer(sock) for sock in left]),
            "the gateway to close every silent connection",
            30,
        )
    finally:
        for sock in silent + preface_only:
            sock.close()


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    header = struct.pack(">I", len(payload))[1:] + bytes([kind, flags])
    return header + struct.pack(">I", stream) + payload


def literal(name: str, value: str) -> bytes:
    """An HPACK header field, literal, not indexed, with a literal name."""
    return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


def read_frames(sock: socket.socket):
    """The frames ``sock`` receives, as (type, flags, stream, payload), until
    the other end closes it."""
    buffer = b""
    while True:
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                break
            kind, flags = buffer[3], buffer[4]
            stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            yield kind, flags, stream, buffer[9 : 9 + length]
            buffer = buffer[9 + length :]
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk


def test_an_idle_connection_gets_a_goaway_and_the_next_call_still_succeeds(start_gateway):
    gateway = start_gateway("--idle-connection-timeout", "1")
    address = gateway.url.removeprefix("grpc://")
    host, port = address.rsplit(":", 1)
    headers = b"".join(
        literal(name, value)
        for name, value in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/mysticchallenge.v1.Gateway/GetWorkers"),
            (":authority", address),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )
    goaways = []
    answered = False
    with socket.create_connection((host, int(port))) as sock:
        sock.settimeout(30)
        empty_message = b"\x00\x00\x00\x00\x00"
        sock.sendall(
            PREFACE
            + frame(SETTINGS, 0, 0)
            + frame(HEADERS, END_HEADERS, 1, headers)
            + frame(DATA, END_STREAM, 1, empty_message)
        )
        for kind, flags, stream, payload in read_frames(sock):
            if kind == SETTINGS and not flags & ACK:
                sock.sendall(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                sock.sendall(frame(PING, ACK, 0, payload))
            elif kind == HEADERS and stream == 1 and flags & END_STREAM:
                answered = True
            elif kind == GOAWAY:
                goaways.append(payload)
    assert answered, "the call was not answered before the connection closed"
    assert goaways, "the gateway closed the idle connection without a GOAWAY"
    last_stream, error_code = struct.unpack(">II", goaways[-1][:8])
    assert error_code == 0, "not a graceful GOAWAY (NO_ERROR)"
    assert last_stream == 1, "the answered call was not counted as processed"

    # A client whose connection was closed so calls again without noticing.
    remote = compute_this(server=gateway.url)(double)
    assert remote(1).run() == 2
    wait_until(lambda: connections_to(gateway.url) == 0, "the idle connection to be closed", 10)
    assert remote(2).run() == 4


def open_files_limits(pid: int) -> tuple[str, str]:
    """The soft and hard limits of open files of process ``pid``."""
    limits = pathlib.Path(f"/proc/{pid}/limits").read_text()
    match = re.search(r"^Max open files\s+(\S+)\s+(\S+)", limits, re.MULTILINE)
    assert match is not None, limits
    return match.group(1), match.group(2)


def test_the_gateway_raises_its_open_files_limit_to_the_hard_limit(start_gateway):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(1024, hard)
    # The gateway inherits this process's limits: start it with a low one.
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        gateway = start_gateway()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    gateway_soft, gateway_hard = open_files_limits(gateway.process.pid)
    assert gateway_soft == gateway_hard
