"""The worker's segment channel: fd 3, a Unix socket to the gateway
(``src/segments/channel.rs``). Just before a call that brought a segment
(``MCQ3`` with a handle), the gateway sends that segment here; just before
answering with a result in a segment (``MCR2``), the worker sends it here.
A worker started without the channel (by hand, by an older gateway) takes
no segments: such calls get an error, and results travel inline.

The socket is opened before the protocol's fds are moved (``_stdio.py``),
so that nothing else lands on fd 3, and is not inherited by what the
function starts.
"""

from __future__ import annotations

import os
import socket

from mystic_wire import _records

FD = 3


class SegmentChannel:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def receive(self) -> int:
        """The segment of the call just received (a descriptor, the caller's
        to close)."""
        record, fd = _records.receive(self._sock)
        if fd is None or record.kind != _records.CALL:
            if fd is not None:
                os.close(fd)
            raise OSError(f"the gateway sent {record.kind!r} on the segment channel, not a segment")
        return fd

    def send(self, fd: int) -> None:
        """Sends the segment of the response about to be sent."""
        _records.send(self._sock, _records.Record(_records.RESULT), fd)


class _Opened:
    channel: SegmentChannel | None = None


_OPENED = _Opened()


def open_channel() -> None:
    """Takes fd 3 as the segment channel if it is a Unix stream socket."""
    try:
        sock = socket.socket(fileno=FD)
    except OSError:
        return
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        return
    sock.setblocking(True)
    os.set_inheritable(FD, False)
    _OPENED.channel = SegmentChannel(sock)


def channel() -> SegmentChannel | None:
    """The segment channel, if this worker has one."""
    return _OPENED.channel
