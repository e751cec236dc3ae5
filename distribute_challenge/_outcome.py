"""A call's outcome as the caller gets it: the one response handler of every
call, unary or streamed. What the function printed is written to the
caller's stdout and stderr; then its result is returned, or what it raised
is raised."""

from __future__ import annotations

import sys
from typing import Any

from mystic_wire import ERROR, OK, SerializationError, decode_chunk, decode_response
from mystic_wire._segments import is_segment_response

from . import _segmented
from ._segment_door import Door


def finish(payload: bytes, door: Door | None = None, call_fd: int | None = None) -> Any:
    """Turns a response payload into the result, or raises what the call
    raised; a result in shared memory is taken through ``door`` (and may lie
    in the call's own segment, ``call_fd``)."""
    if is_segment_response(payload):
        response = _segmented.load_response(payload, door, call_fd)
    else:
        response = decode_response(payload)
    replay(response.stdout, sys.stdout)
    replay(response.stderr, sys.stderr)
    if response.kind == OK:
        return response.value
    if response.kind == ERROR:
        raise SerializationError(response.value)
    raise response.value


def items(payload: bytes) -> list[Any]:
    """The items of a chunk a streamed call sent, once what was printed
    while they were made is replayed."""
    chunk = decode_chunk(payload)
    replay(chunk.stdout, sys.stdout)
    replay(chunk.stderr, sys.stderr)
    return chunk.items


def replay(text: str, stream: Any) -> None:
    if text and stream is not None:
        stream.write(text)
        stream.flush()
