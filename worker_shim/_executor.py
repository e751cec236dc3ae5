"""Runs one encoded call and returns the encoded response; never raises.

Steps: find the request's function (unpickled from the
request and kept by digest in a :class:`FunctionCache`, or found there; a
digest it does not hold is answered with a *miss* for the gateway, which
then attaches the function; a response to a call whose attached function
was kept starts with ``KEPT_MAGIC``), decode the call (failure → an
``"error"`` response), import and bind its depmodules, call the function
with ``sys.stdout`` / ``sys.stderr`` redirected to in-memory text files
that keep the head and the tail of what it prints (``_output.py``,
``--max-output-bytes``), then pickle the outcome:

- the result → ``"ok"``; a result that cannot be pickled → ``"error"``;
- any exception, ``SystemExit`` and ``KeyboardInterrupt`` included →
  ``"raised"``, with its traceback (from the function's frame on) pickled by
  tblib (``_tracebacks.py``); an exception that cannot be pickled, or that would not unpickle,
  travels as a ``RemoteError`` with its type name, message and formatted
  traceback instead.

A call from a caller on the gateway's host (``MCQ3``, ``mystic_wire/_segments.py``)
may bring its pickle and large buffers in a segment, which comes with the
request over the link: the arguments are unpickled over the worker's
private mapping of it, arrays in place, and the segment is closed whatever
happens to the call. Its result, when it holds buffers of the caller's
threshold or more (or its pickle is that large), goes back in a segment the
worker writes and seals, sent with the response (``MCR2``); any other
outcome inline.

A function that returns a generator (or another iterator) has its items
listed into the result; a call sent to stream its items (``MCS1``) gets them
chunk by chunk instead (``_items.py``), the next chunk on each ``MCN1``,
until the end or ``MCX1``. Any other request ends a stream still open (the
gateway gave up on it).

The worker survives everything the function does short of ending the process
(``os._exit``, a fatal signal).
"""

from __future__ import annotations

import io
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any

from mystic_native import Segment
from mystic_wire import (
    CLOSE_REQUEST,
    ERROR,
    KEPT_MAGIC,
    NEXT_REQUEST,
    OK,
    RAISED,
    RESPONSE_MAGIC,
    STREAM_MAGIC,
    Buffer,
    RemoteError,
    _segments,
    bind_depmodules,
    decode_call,
    decode_function,
    decode_response,
    encode_miss,
    encode_response,
    encode_response_parts,
    split_request,
)

from . import _output
from ._functions import FunctionCache
from ._items import ItemStream
from ._output import BoundedText
from ._tracebacks import picklable

_FUNCTIONS = FunctionCache()
_MAGIC_BYTES = len(STREAM_MAGIC)


class _Streams:
    """The call whose items are being streamed, if any (at most one)."""

    active: ItemStream | None = None


_STREAMS = _Streams()


class _Results:
    """From what size the running call's result goes back in a segment (0:
    inline): what its caller asked for; and where its arguments lie."""

    threshold = 0
    borrowed: _segments.Borrowed | None = None


_RESULTS = _Results()

#: A response: its pieces, and the descriptor of its result segment (the
#: caller's to close once sent) or None.
Response = tuple[list[Buffer], "int | None"]


class _Miss(Exception):
    """The request names a function this worker does not hold."""

    def __init__(self, digest: bytes) -> None:
        self.digest = digest


def execute(
    payload: bytes | memoryview,
    segment: Segment | None = None,
    functions: FunctionCache = _FUNCTIONS,
    streams: _Streams = _STREAMS,
) -> Response:
    """Runs the call in ``payload`` (``segment``: the one that came with it;
    closed here) or goes on with the one streaming its items; returns the
    response (see ``encode_response_parts`` for its pieces)."""
    try:
        return _execute(payload, segment, functions, streams)
    finally:
        # The arguments' segment goes as soon as nothing of the call holds it.
        if segment is not None:
            segment.close()


def _execute(
    payload: bytes | memoryview,
    segment: Segment | None,
    functions: FunctionCache,
    streams: _Streams,
) -> Response:
    magic = bytes(payload[:_MAGIC_BYTES])
    active, streams.active = streams.active, None
    if magic in (NEXT_REQUEST, CLOSE_REQUEST):
        if active is None:
            message = "the gateway asked for items, but no call is streaming them"
            return [encode_response(ERROR, message, "", "")], None
        response = active.next(_encode) if magic == NEXT_REQUEST else active.close(_encode)
        if not active.over:
            streams.active = active
        return response, None
    if active is not None:
        active.close(_encode)
    streamed = magic == STREAM_MAGIC
    if streamed:
        payload = memoryview(payload)[_MAGIC_BYTES:]
    stdout, stderr = _output.capture("stdout"), _output.capture("stderr")
    result_segment = None
    try:
        kind, value, kept = _run(payload, segment, functions, stdout, stderr, streamed)
        if streamed and kind == OK:
            stream = ItemStream(value, stdout, stderr)
            response = stream.next(_encode)
            if not stream.over:
                streams.active = stream
        elif kind == OK and _RESULTS.threshold:
            response, result_segment = _encode_result(value, stdout.getvalue(), stderr.getvalue())
        else:
            response = _encode(kind, value, stdout.getvalue(), stderr.getvalue())
        return ([KEPT_MAGIC, *response] if kept else response), result_segment
    except _Miss as miss:
        return [encode_miss(miss.digest)], None
    except BaseException as exc:  # a bug here must not end the worker
        if result_segment is not None:
            os.close(result_segment)
        message = f"the worker failed to handle the call: {type(exc).__name__}: {exc}"
        return [encode_response(ERROR, message, stdout.getvalue(), stderr.getvalue())], None
    finally:
        _RESULTS.threshold, _RESULTS.borrowed = 0, None


def _run(
    payload: bytes | memoryview,
    segment: Segment | None,
    functions: FunctionCache,
    stdout: BoundedText,
    stderr: BoundedText,
    streamed: bool = False,
) -> tuple[str, Any, bool]:
    """The call's outcome (a kind and a value), and whether the function
    attached to it was kept."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = stdout, stderr
    kept = False
    try:
        try:
            digest, pickled, call, segmented = split_request(payload)
            if pickled is None:
                function = functions.get(digest)
                if function is None:
                    raise _Miss(digest)
            else:
                function = decode_function(pickled)
                kept = functions.put(digest, function, pickled.nbytes)
            if segmented:
                header = _segments.parse_call(call)
                fd = None if segment is None else segment.fileno()
                (args, kwargs, spec), mapping = _segments.load_call(header, fd)
                if not streamed:
                    _RESULTS.threshold = header.result_threshold
                    _RESULTS.borrowed = mapping and _segments.Borrowed(mapping, fd)
                # Mapped: the mapping keeps what it needs of the segment.
                if segment is not None:
                    segment.close()
            else:
                args, kwargs, spec = decode_call(call)
            del pickled, call
        except _Miss:
            raise
        except Exception as exc:
            return (
                ERROR,
                f"the worker could not decode the call: {exc}. Make sure the worker's Python "
                "has the modules the function and its arguments need, and the same "
                "distribute_challenge version as the client.",
                kept,
            )
        try:
            function_globals = getattr(function, "__globals__", None)
            if spec:
                bind_depmodules(function_globals if function_globals is not None else {}, spec)
            result = function(*args, **kwargs)
            if streamed:
                return OK, _iterate(result, function), kept
            if _is_iterator(result):
                result = list(result)
            return OK, result, kept
        except BaseException as exc:
            if exc.__traceback__ is not None and exc.__traceback__.tb_next is not None:
                exc.__traceback__ = exc.__traceback__.tb_next  # drop this frame
            return RAISED, exc, kept
    finally:
        sys.stdout, sys.stderr = saved


def _encode_result(value: Any, stdout: str, stderr: str) -> Response:
    """An ``"ok"`` response for a caller that takes results in a segment:
    in one when it is large enough, inline otherwise."""
    try:
        pickled = _segments.dump((OK, value, stdout, stderr), _RESULTS.threshold)
        if not pickled.needs_segment(_RESULTS.threshold):
            return [RESPONSE_MAGIC, *pickled.pieces], None
        fd, layout = _segments.write_segment(pickled, _RESULTS.borrowed)
        try:
            return [_segments.response_header(), _segments.encode_body(layout)], fd
        except BaseException:
            os.close(fd)
            raise
    except Exception:
        # No memory or descriptors for a segment: inline, then; a result
        # that cannot be pickled: _encode says so.
        pass
    return _encode(OK, value, stdout, stderr), None


def _iterate(result: Any, function: Any) -> Iterator[Any]:
    name = getattr(function, "__qualname__", repr(function))
    if hasattr(result, "__anext__"):
        raise TypeError(
            f"{name} returned an async generator; stream() runs plain generators "
            "(`def` with `yield`) in the worker"
        )
    try:
        return iter(result)
    except TypeError:
        raise TypeError(
            f"stream() needs a function that returns an iterable (a generator, for "
            f"example); {name} returned {type(result).__name__}: call it with run()"
        ) from None


def _is_iterator(result: Any) -> bool:
    """An iterator (a generator, ``map``, ...) whose items make the result;
    not a file, which is one too."""
    return isinstance(result, Iterator) and not isinstance(result, io.IOBase)


def _encode(kind: str, value: Any, stdout: str, stderr: str) -> list[Buffer]:
    if kind == OK:
        try:
            return encode_response_parts(OK, value, stdout, stderr)
        except Exception as exc:
            message = (
                f"the result of the call could not be pickled: {exc}. "
                "Return plain data (no locks, open files, sockets or generators)."
            )
            return [encode_response(ERROR, message, stdout, stderr)]
    if kind == RAISED:
        try:
            return [_encode_exception(value, stdout, stderr)]
        finally:
            traceback.clear_frames(value.__traceback__)
    return [encode_response(kind, value, stdout, stderr)]


def _encode_exception(exc: BaseException, stdout: str, stderr: str) -> bytes:
    try:
        with picklable(exc):
            encoded = encode_response(RAISED, exc, stdout, stderr)
        decode_response(encoded)  # it must also unpickle on the client
        return encoded
    except Exception:
        stand_in = RemoteError(
            f"{type(exc).__module__}.{type(exc).__qualname__}",
            _safely(str, exc),
            _safely(lambda exc: "".join(traceback.format_exception(exc)), exc),
        )
        return encode_response(RAISED, stand_in, stdout, stderr)


def _safely(render: Any, exc: BaseException) -> str:
    try:
        return render(exc)
    except Exception as error:
        return f"<cannot render {object.__repr__(exc)}: {type(error).__name__}: {error}>"
