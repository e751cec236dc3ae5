"""The request and response payload format: the one definition used by the
client (``distribute_challenge``) and by the worker (``worker_shim``).

The gateway never looks inside a payload except for the request's 4-byte magic.

Request payload::

    b"MCQ1" + pickle(protocol 5, cloudpickle) of (function, args, kwargs, depmodules)

``depmodules`` is a tuple of ``(module_name, alias_names)`` pairs (see
``_depmodules.py``). Which modules the function travels with by value is the
client's choice (``distribute_challenge._by_value``), made before it encodes.

Response payload::

    b"MCR1" + pickle(protocol 5, cloudpickle) of (kind, value, stdout, stderr)

``kind`` is one of:

- ``"ok"``: ``value`` is the function's result;
- ``"raised"``: ``value`` is the exception the function raised, with its
  traceback pickled by tblib (or a ``RemoteError`` standing in for an
  exception that could not be pickled);
- ``"error"``: the worker itself failed to handle the call (the request could
  not be unpickled, the result could not be pickled); ``value`` is a message
  that says what to do.

``stdout`` and ``stderr`` are what the function printed, as text.

``decode_request`` and ``decode_response`` raise :class:`CodecError` (a
``SerializationError``) for anything that is not a well-formed payload.
"""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

import cloudpickle

from ._exceptions import CodecError, SerializationError

REQUEST_MAGIC = b"MCQ1"
RESPONSE_MAGIC = b"MCR1"
PICKLE_PROTOCOL = 5

OK = "ok"
RAISED = "raised"
ERROR = "error"
KINDS = (OK, RAISED, ERROR)

DepModules = tuple[tuple[str, tuple[str, ...]], ...]
Buffer = bytes | bytearray | memoryview


class Request(NamedTuple):
    """A decoded call."""

    function: Any
    args: tuple
    kwargs: dict
    depmodules: DepModules


class Response(NamedTuple):
    """A decoded outcome of a call."""

    kind: str
    value: Any
    stdout: str
    stderr: str


def encode_request(function: Any, args: tuple, kwargs: dict, depmodules: DepModules) -> bytes:
    """Encodes one call. Raises SerializationError if anything cannot be pickled.

    ``function`` travels by reference (module and name) unless cloudpickle
    pickles it by value: defined in ``__main__`` or locally, or its module
    registered with ``cloudpickle.register_pickle_by_value`` (the client
    registers modules the worker cannot import)."""
    record = (function, tuple(args), dict(kwargs), tuple(depmodules))
    name = getattr(function, "__qualname__", repr(function))
    try:
        return b"".join(_dump(REQUEST_MAGIC, record))
    except Exception as exc:
        raise SerializationError(
            f"cannot pickle the call to {name}: {type(exc).__name__}: {exc}; "
            "the function, its arguments and the globals it uses must be picklable "
            "(locks, open files, sockets and generators are not): pass plain data instead"
        ) from exc


def decode_request(data: bytes | bytearray | memoryview) -> Request:
    """Decodes a request payload (any bytes-like object, e.g. a shared-memory view)."""
    record = _load(data, REQUEST_MAGIC, "request")
    if not (isinstance(record, tuple) and len(record) == 4):
        raise CodecError("the request payload is not a (function, args, kwargs, depmodules) record")
    function, args, kwargs, depmodules = record
    if not (
        callable(function)
        and isinstance(args, tuple)
        and isinstance(kwargs, dict)
        and isinstance(depmodules, tuple)
    ):
        raise CodecError("the request payload holds a record of the wrong types")
    return Request(function, args, kwargs, depmodules)


def encode_response(kind: str, value: Any, stdout: str, stderr: str) -> bytes:
    """Encodes one outcome. Raises SerializationError if ``value`` cannot be pickled."""
    return b"".join(encode_response_parts(kind, value, stdout, stderr))


def encode_response_parts(kind: str, value: Any, stdout: str, stderr: str) -> list[Buffer]:
    """As :func:`encode_response`, but as the pieces the payload is made of, in
    order: large byte strings in the result are not copied into one buffer."""
    if kind not in KINDS:
        raise ValueError(f"unknown response kind {kind!r}")
    try:
        return _dump(RESPONSE_MAGIC, (kind, value, stdout, stderr))
    except Exception as exc:
        raise SerializationError(f"{type(exc).__name__}: {exc}") from exc


def decode_response(data: bytes | bytearray | memoryview) -> Response:
    """Decodes a response payload."""
    record = _load(data, RESPONSE_MAGIC, "response")
    if not (isinstance(record, tuple) and len(record) == 4):
        raise CodecError("the response payload is not a (kind, value, stdout, stderr) record")
    kind, value, stdout, stderr = record
    if kind not in KINDS or not isinstance(stdout, str) or not isinstance(stderr, str):
        raise CodecError("the response payload holds a record of the wrong types")
    if kind == ERROR and not isinstance(value, str):
        raise CodecError("the response payload holds an error without a message")
    if kind == RAISED and not isinstance(value, BaseException):
        raise CodecError("the response payload holds a raised value that is not an exception")
    return Response(kind, value, stdout, stderr)


class _Pieces:
    """A file for the pickler that keeps each write as it comes. The C pickler
    hands large byte strings to ``write`` whole (not via its frame buffer), so
    they are kept by reference instead of being copied."""

    def __init__(self, first: bytes) -> None:
        self.pieces: list[Buffer] = [first]

    def write(self, data: Buffer) -> int:
        self.pieces.append(data)
        return memoryview(data).nbytes


def _dump(magic: bytes, record: tuple) -> list[Buffer]:
    sink = _Pieces(magic)
    cloudpickle.dump(record, sink, protocol=PICKLE_PROTOCOL)
    return sink.pieces


def _load(data: bytes | bytearray | memoryview, magic: bytes, what: str) -> Any:
    try:
        view = memoryview(data)
    except TypeError as exc:
        raise CodecError(f"a {what} payload must be bytes, not {type(data).__name__}") from exc
    with view:
        if view.nbytes < len(magic) or view[: len(magic)].tobytes() != magic:
            raise CodecError(
                f"the {what} payload does not start with {magic!r}: it was not made by this "
                "codec (or by a different version of it); use the same distribute_challenge "
                "version for the client and the workers"
            )
        try:
            return pickle.loads(view.cast("B")[len(magic) :])
        except Exception as exc:
            raise CodecError(
                f"the {what} payload could not be unpickled: {type(exc).__name__}: {exc}; "
                "if a module is missing, install it where the payload is decoded"
            ) from exc
