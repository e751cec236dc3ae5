"""A call through shared memory (``mystic_wire/_segments.py``), on the
client: the request built for a gateway whose door (``_segment_door.py``)
this process holds, and a result that comes back in a segment.

The call's record is pickled once, its buffers of ``threshold`` bytes or
more out of band. If it has any, or its pickle alone is that large, it is
written into a sealed memfd, handed through the door at each attempt (each
gets its own handle: a refused attempt's segment is gone with it) and the
call names it, asking for its result in a segment too. A small call of a
function whose results have been large asks for that alone (its pickle
inline after the header); any other small call is a plain inline call
(``inline``), exactly as without a door, so small calls cost nothing more.
"""

from __future__ import annotations

import os

from mystic_wire import CodecError, DistributeError, Response, _segments

from ._segment_door import Door, DoorError


class SegmentedRequest:
    """One call's request for a gateway on this host."""

    def __init__(
        self, door: Door, digest: bytes, record: tuple, threshold: int, large_results: bool
    ) -> None:
        self.door = door
        self._digest = digest
        self._threshold = threshold
        self._fd: int | None = None
        self._handle = 0
        self.inline: bytes | None = None
        """The plain inline call, when this one needs no shared memory."""
        pickled = _segments.dump(record, threshold)
        if pickled.needs_segment(threshold):
            self._fd, layout = _segments.write_segment(pickled)
            self._body = [_segments.encode_body(layout)]
        elif large_results:
            self._body = _segments.inline_body(pickled.pieces)
        else:
            self.inline = _segments.inline_call(digest, pickled)

    def payload(self) -> bytes:
        """The call, its segment handed over now (raises ``DoorError`` if
        the door fails)."""
        self.abandon()
        if self._fd is not None:
            self._handle = self.door.put(self._fd)
        header = _segments.call_header(
            self._digest, self.door.session, self._handle, self._threshold
        )
        return b"".join((header, *self._body))

    @property
    def fd(self) -> int | None:
        """The call's segment, while the call lasts."""
        return self._fd

    def abandon(self) -> None:
        """The last attempt failed: its segment, if no call took it, goes."""
        if self._handle:
            self.door.drop(self._handle)
            self._handle = 0

    def close(self) -> None:
        """The call is over: the client's copy of its segment goes."""
        self._handle = 0
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


def load_response(payload: bytes, door: Door | None, call_fd: int | None = None) -> Response:
    """The response an ``MCR2`` payload names, taken through ``door``
    (``call_fd``: the call's own segment, where a result may lie)."""
    handle, layout = _segments.parse_response(memoryview(payload))
    if door is None:
        raise CodecError("the gateway sent a result in shared memory that this call cannot take")
    if handle == 0:
        # The gateway had no session to leave the result in: this process's
        # segment connection closed while the call ran.
        raise DistributeError(
            "the call ran, but the gateway dropped its result: this process's shared-memory "
            "connection to the gateway closed while the call ran; run the call again"
        )
    try:
        fd = door.get(handle)
    except DoorError as exc:
        raise DistributeError(
            f"the call ran, but its result could not be taken from shared memory: {exc}; "
            "the gateway may have restarted; run the call again"
        ) from exc
    try:
        return _segments.load_response(fd, layout, call_fd)
    finally:
        os.close(fd)
