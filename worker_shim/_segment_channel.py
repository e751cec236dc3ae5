"""The worker's segment channel: fd 3, a Unix socket to the gateway
(``src/segments/channel.rs``). Just before a call that brought a segment
(``MCQ3`` with a handle), the gateway sends that segment here; just before
answering with a result in a segment (``MCR2``), the worker sends it here.
A worker started without the channel (by hand, by an older gateway) takes
no segments: such calls get an error, and results travel inline.

The gateway sends a call's segment before it sends the call, so the
segment is always waiting on the channel by the time its call is read:
the worker takes every record waiting there (without blocking) as the
first thing it does with a call that names a segment, or that is too
malformed to say, and closes whatever the call does not use. A segment
can never be left for the next call. Each record carries the handle of
the call it belongs to, which the worker checks.

The socket is opened before the protocol's fds are moved (``_stdio.py``),
so that nothing else lands on fd 3, and is not inherited by what the
function starts; neither are the descriptors it receives.
"""

from __future__ import annotations

import os
import socket

from mystic_wire import _records, _segments
from mystic_wire._exceptions import CodecError

FD = 3


class SegmentChannel:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def waiting(self) -> list[tuple[int, int]]:
        """Every segment waiting on the channel, as (handle, descriptor)
        pairs whose descriptors are the caller's to close."""
        taken: list[tuple[int, int]] = []
        try:
            while True:
                try:
                    record, fd = _records.receive(self._sock, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return taken
                if fd is None or record.kind != _records.CALL:
                    if fd is not None:
                        os.close(fd)
                    raise OSError(
                        f"the gateway sent {record.kind!r} on the segment channel, not a segment"
                    )
                taken.append((record.handle, fd))
        except BaseException:
            for _handle, fd in taken:
                os.close(fd)
            raise

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


class CallSegment:
    """The segment that came with one call (if any), taken off the channel
    before anything about the call can fail, and closed by :meth:`close`
    whatever happens to the call."""

    def __init__(self, handle: int, fd: int | None) -> None:
        self.handle = handle
        self.fd = fd

    @classmethod
    def take(cls, request) -> CallSegment:
        """Takes the segment ``request`` names off the channel, closing any
        other segment waiting there. Raises ``CodecError`` when the call
        names a segment that did not come (and ``OSError`` when the channel
        fails)."""
        handle = _segments.named_handle(request)
        sock = _OPENED.channel
        if handle == 0 or sock is None:
            if handle:
                raise CodecError(
                    "the call brought a shared-memory segment, but this worker has no "
                    "segment channel (it was not started by the gateway)"
                )
            return cls(0, None)
        # Named, or too malformed to tell: whatever waits is taken either way.
        found = None
        for sent_for, fd in sock.waiting():
            if handle and sent_for == handle and found is None:
                found = fd
            else:
                os.close(fd)
        if handle and found is None:
            raise CodecError(f"the call's shared-memory segment (handle {handle}) did not come")
        return cls(handle or 0, found)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
