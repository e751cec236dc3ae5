"""The messages of the gateway's segment socket: 32 bytes each, a kind, a
status, a handle and a token, with at most one descriptor attached, over a
Unix stream socket (the layout is ``src/wire/records.rs``, read and written
through the extension ``mystic_native``; ``src/segments/socket.rs`` is the
gateway's side). The client speaks them
(``distribute_challenge/_segment_door.py``)."""

from __future__ import annotations

import os
import socket
import struct
from typing import NamedTuple

import mystic_native
from mystic_native import RECORD_BYTES, TOKEN_BYTES

_FD = struct.Struct("i")

HELLO = mystic_native.RECORD_HELLO
PUT = mystic_native.RECORD_PUT
GET = mystic_native.RECORD_GET
DROP = mystic_native.RECORD_DROP

OK = mystic_native.STATUS_OK
REFUSED = mystic_native.STATUS_REFUSED
TOO_LARGE = mystic_native.STATUS_TOO_LARGE
BUSY = mystic_native.STATUS_BUSY
UNKNOWN = mystic_native.STATUS_UNKNOWN
BAD_REQUEST = mystic_native.STATUS_BAD_REQUEST


class Record(NamedTuple):
    kind: bytes
    status: int = OK
    handle: int = 0
    token: bytes = bytes(TOKEN_BYTES)


def send(sock: socket.socket, record: Record, fd: int | None = None) -> None:
    """Sends ``record``, with ``fd`` attached if given."""
    data = mystic_native.pack_record(*record)
    if fd is None:
        sock.sendall(data)
        return
    sent = socket.send_fds(sock, [data], [fd])
    if sent < len(data):
        sock.sendall(data[sent:])


def receive(sock: socket.socket, flags: int = 0) -> tuple[Record, int | None]:
    """The next record and the descriptor that came with it (the caller's
    to close, and close-on-exec: nothing the receiver starts inherits it).
    Raises EOFError when the peer has closed; ``flags`` go to the first
    ``recvmsg`` (``MSG_DONTWAIT``: ``BlockingIOError`` if none is there)."""
    # recvmsg itself: socket.recv_fds drops its flags (Python 3.11).
    data, ancillary, _flags, _address = sock.recvmsg(
        RECORD_BYTES, socket.CMSG_SPACE(2 * _FD.size), flags | socket.MSG_CMSG_CLOEXEC
    )
    fds = [
        fd
        for level, kind, payload in ancillary
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
        for (fd,) in _FD.iter_unpack(payload[: len(payload) - len(payload) % _FD.size])
    ]
    try:
        while data and len(data) < RECORD_BYTES:
            more = sock.recv(RECORD_BYTES - len(data))
            if not more:
                break
            data += more
        if len(data) < RECORD_BYTES:
            raise EOFError("the segment socket closed")
        if len(fds) > 1:
            raise OSError("more than one descriptor came with one segment record")
    except BaseException:
        for fd in fds:
            _close(fd)
        raise
    return Record(*mystic_native.unpack_record(data)), (fds[0] if fds else None)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
