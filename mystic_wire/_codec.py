"""The request and response payloads, and the pickling policy: what the
client (``distribute_challenge``) and the worker (``worker_shim``) put in
the records. The records' layouts are the gateway's own definition
(``src/wire/``), which the extension ``mystic_native`` exposes: this module
takes them from there, and pickles and unpickles what they carry.

A function travels once: the client pickles it at its first call and after
that refers to it by its digest (SHA-256 of its pickle). A request is the
call, optionally with the function attached::

    call     = b"MCQ2" + digest (32 bytes) + pickle of (args, kwargs, depmodules)
    attached = b"MCA2" + u32 little-endian length + pickled function + call

The gateway keeps functions by digest (it checks that an attached function's
pickle has the digest its call names) and attaches one for a worker that has
not seen it; a worker keeps the unpickled functions by digest. A worker
asked for a digest it does not know answers ``b"MCM2" + digest`` (a *miss*)
and the gateway sends the call again with the function attached. A
worker that keeps a function attached to a call says so, by putting
``b"MCK1"`` before its response (the gateway takes it off and sends that
function by digest from then on); a response without it means the worker
did not keep the function (too large for its cache), and the gateway
attaches it to every call of that worker.

``depmodules`` is a tuple of ``(module_name, alias_names)`` pairs (see
``_depmodules.py``). Which modules the function travels with by value is the
client's choice (``distribute_challenge._by_value``), made before it encodes.

Response payload::

    b"MCR1" + pickle(protocol 5) of (kind, value, stdout, stderr)

``kind`` is one of:

- ``"ok"``: ``value`` is the function's result;
- ``"raised"``: ``value`` is the exception the function raised, with its
  traceback pickled by tblib (or a ``RemoteError`` standing in for an
  exception that could not be pickled);
- ``"error"``: the worker itself failed to handle the call (the request could
  not be unpickled, the result could not be pickled); ``value`` is a message
  that says what to do.

``stdout`` and ``stderr`` are what the function printed, as text.

A call may stream the items of the iterator its function returns (a
generator). Between the gateway and the worker::

    gateway → worker   b"MCS1" + request   run the call; answer with its first chunk
                       b"MCN1"             the next chunk
                       b"MCX1"             no more: close the iterator
    worker → gateway   b"MCI1" + pickle(protocol 5) of (items, stdout, stderr)
                                           a chunk of items (a list), more to come
                       a response          the end: ``"ok"`` (value None) once the
                                           iterator is exhausted or closed, or
                                           what it raised

The gateway hands the chunks to the client as they come; ``.run()`` of such
a function instead gets the list of its items as its result.

Records are pickled with the standard pickler when they hold nothing that
must travel by value (functions or classes of ``__main__`` or of a module
registered with ``cloudpickle.register_pickle_by_value``), with cloudpickle
otherwise; both unpickle with ``pickle.loads``.

The decoders raise :class:`CodecError` (a ``SerializationError``) for
anything that is not a well-formed payload.
"""

from __future__ import annotations

import pickle
import sys
import types
import typing
from typing import Any, NamedTuple

import cloudpickle

import mystic_native

from ._exceptions import CodecError, SerializationError

# The records, from the extension.
REQUEST_MAGIC = mystic_native.REQUEST_MAGIC
FUNCTION_MAGIC = mystic_native.FUNCTION_MAGIC
MISS_MAGIC = mystic_native.MISS_MAGIC
KEPT_MAGIC = mystic_native.KEPT_MAGIC
RESPONSE_MAGIC = mystic_native.RESPONSE_MAGIC
STREAM_MAGIC = mystic_native.STREAM_MAGIC
CHUNK_MAGIC = mystic_native.CHUNK_MAGIC
NEXT_REQUEST = mystic_native.NEXT_REQUEST
CLOSE_REQUEST = mystic_native.CLOSE_REQUEST
DIGEST_BYTES = mystic_native.DIGEST_BYTES
encode_miss = mystic_native.encode_miss
strip_kept = mystic_native.strip_kept

PICKLE_PROTOCOL = 5

OK = "ok"
RAISED = "raised"
ERROR = "error"
KINDS = (OK, RAISED, ERROR)

DepModules = tuple[tuple[str, tuple[str, ...]], ...]
Buffer = bytes | bytearray | memoryview


class Function(NamedTuple):
    """A function as it travels: its digest and its pickle."""

    digest: bytes
    pickled: bytes


class Call(NamedTuple):
    """A decoded call, without its function."""

    args: tuple
    kwargs: dict
    depmodules: DepModules


class Request(NamedTuple):
    """A decoded call with its function."""

    function: Any
    args: tuple
    kwargs: dict
    depmodules: DepModules


class Split(NamedTuple):
    """A request's parts, not yet unpickled: the digest its call names, the
    attached function's pickle (None when only the digest travels), and the
    call's pickle; for a call whose caller shares the gateway's host
    (``segmented``, see ``_segments.py``), the whole call, header first."""

    digest: bytes
    pickled_function: memoryview | None
    call: memoryview
    segmented: bool = False


class Response(NamedTuple):
    """A decoded outcome of a call."""

    kind: str
    value: Any
    stdout: str
    stderr: str


def encode_function(function: Any) -> Function:
    """Pickles a function once, as it is now: with what it closes over and the
    globals it uses. Raises SerializationError if it cannot be pickled.

    ``function`` travels by reference (module and name) unless cloudpickle
    pickles it by value: defined in ``__main__`` or locally, or its module
    registered with ``cloudpickle.register_pickle_by_value`` (the client
    registers modules the worker cannot import)."""
    if not callable(function):
        raise SerializationError(f"only callables can be called remotely, not {function!r}")
    try:
        pickled = cloudpickle.dumps(function, protocol=PICKLE_PROTOCOL)
    except Exception as exc:
        name = getattr(function, "__qualname__", repr(function))
        raise SerializationError(
            f"cannot pickle the function {name}: {type(exc).__name__}: {exc}; the globals it "
            "uses and what it closes over must be picklable (locks, open files, sockets and "
            "generators are not): pass them as arguments instead"
        ) from exc
    import hashlib  # here, not at the top: workers never hash, and start without it

    return Function(hashlib.sha256(pickled).digest(), pickled)


def encode_call(
    digest: bytes, args: tuple, kwargs: dict, depmodules: DepModules, name: str = "the function"
) -> bytes:
    """Encodes a call of the function with ``digest`` (called ``name`` in
    errors), without the function. Raises SerializationError if an argument
    cannot be pickled."""
    if len(digest) != DIGEST_BYTES:
        raise ValueError(f"a function digest is {DIGEST_BYTES} bytes, not {len(digest)}")
    record = (tuple(args), dict(kwargs), tuple(depmodules))
    try:
        return b"".join(_dump(mystic_native.by_digest_header(digest), record))
    except Exception as exc:
        raise SerializationError(
            f"cannot pickle the call to {name}: {type(exc).__name__}: {exc}; "
            "arguments must be picklable (locks, open files, sockets and generators are "
            "not): pass plain data instead"
        ) from exc


def attach(function: Function, call: Buffer) -> bytes:
    """A request that carries its function: decodable without any cache."""
    return mystic_native.attach(function.pickled, call)


def encode_request(function: Any, args: tuple, kwargs: dict, depmodules: DepModules) -> bytes:
    """Encodes one call with its function attached (see :func:`attach`)."""
    captured = encode_function(function)
    name = getattr(function, "__qualname__", repr(function))
    return attach(captured, encode_call(captured.digest, args, kwargs, depmodules, name))


def split_request(data: Buffer) -> Split:
    """Separates a request into its digest, its attached function (if any) and
    its call (views of ``data``), without unpickling anything."""
    return Split._make(mystic_native.split_request(data))


def decode_function(pickled: Buffer) -> Any:
    """Unpickles an attached function."""
    function = _loads(pickled, "function")
    if not callable(function):
        raise CodecError("the request's function is not callable")
    return function


def decode_call(call: Buffer) -> Call:
    """Unpickles a call's ``(args, kwargs, depmodules)``."""
    return call_from_record(_loads(call, "request"))


def call_from_record(record: Any) -> Call:
    """Checks an unpickled call record."""
    if not (isinstance(record, tuple) and len(record) == 3):
        raise CodecError("the request payload is not an (args, kwargs, depmodules) record")
    args, kwargs, depmodules = record
    if not (isinstance(args, tuple) and isinstance(kwargs, dict) and isinstance(depmodules, tuple)):
        raise CodecError("the request payload holds a record of the wrong types")
    return Call(args, kwargs, depmodules)


def decode_request(data: Buffer) -> Request:
    """Decodes a request that carries its function (any bytes-like object,
    e.g. a shared-memory view)."""
    split = split_request(data)
    if split.pickled_function is None:
        raise CodecError("the request names its function by digest only; attach the function")
    function = decode_function(split.pickled_function)
    return Request(function, *decode_call(split.call))


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
    return response_from_record(_load(data, RESPONSE_MAGIC, "response"))


def response_from_record(record: Any) -> Response:
    """Checks an unpickled response record."""
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


class Chunk(NamedTuple):
    """A decoded chunk of a streamed call's items."""

    items: list
    stdout: str
    stderr: str


def encode_chunk(items: list, stdout: str, stderr: str) -> list[Buffer]:
    """A chunk of items, as pieces (see :func:`encode_response_parts`).
    Raises SerializationError if an item cannot be pickled."""
    try:
        return _dump(CHUNK_MAGIC, (items, stdout, stderr))
    except Exception as exc:
        raise SerializationError(f"{type(exc).__name__}: {exc}") from exc


def decode_chunk(data: Buffer) -> Chunk:
    """Decodes a chunk of items."""
    record = _load(data, CHUNK_MAGIC, "chunk")
    if not (isinstance(record, tuple) and len(record) == 3):
        raise CodecError("the chunk payload is not an (items, stdout, stderr) record")
    items, stdout, stderr = record
    if not (isinstance(items, list) and isinstance(stdout, str) and isinstance(stderr, str)):
        raise CodecError("the chunk payload holds a record of the wrong types")
    return Chunk(items, stdout, stderr)


class _Pieces:
    """A file for the pickler that keeps each write as it comes. The C pickler
    hands large byte strings to ``write`` whole (not via its frame buffer), so
    they are kept by reference instead of being copied."""

    def __init__(self, first: bytes) -> None:
        self.pieces: list[Buffer] = [first]

    def write(self, data: Buffer) -> int:
        self.pieces.append(data)
        return memoryview(data).nbytes


class _ByValue(Exception):
    """The record holds something the standard pickler would pickle by name
    although it must travel by value."""


# Pickled by name by the standard pickler, by value by cloudpickle: a type
# variable, or a bound method (whose function may not be reachable by name).
_CLOUDPICKLE_ONLY = (types.MethodType, typing.TypeVar, typing.ParamSpec, typing.TypeVarTuple)


class _Reducers:
    """What both picklers add: a ``memoryview`` travels (as its bytes, or out
    of band as a ``PickleBuffer``) and comes back a ``memoryview`` of the same
    format and shape; with buffers going out of band, a large numpy array
    that is not contiguous goes as a contiguous copy, out of band too, as
    numpy's own pickling would copy it into the pickle."""

    out_of_band_bytes: int | None = None

    def reduce_buffer(self, obj: Any) -> Any:
        if isinstance(obj, memoryview):
            return _reduce_memoryview(obj)
        threshold = self.out_of_band_bytes
        if threshold is not None and type(obj).__name__ == "ndarray":
            numpy = sys.modules.get("numpy")
            if (
                numpy is not None
                and isinstance(obj, numpy.ndarray)
                and obj.nbytes >= threshold
                and not obj.dtype.hasobject
                and not (obj.flags.c_contiguous or obj.flags.f_contiguous)
            ):
                return numpy.ascontiguousarray(obj).__reduce_ex__(PICKLE_PROTOCOL)
        return NotImplemented


class _PlainPickler(_Reducers, pickle.Pickler):
    """The standard (C) pickler, refusing what must travel by value. Plain
    data never reaches ``reducer_override``, so it costs nothing there."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _CLOUDPICKLE_ONLY):
            raise _ByValue
        if isinstance(obj, type | types.FunctionType) and _travels_by_value(obj):
            raise _ByValue
        return self.reduce_buffer(obj)


class _CloudPickler(_Reducers, cloudpickle.Pickler):
    """cloudpickle, with the same buffers' reducers."""

    def reducer_override(self, obj: Any) -> Any:
        reduced = self.reduce_buffer(obj)
        if reduced is NotImplemented:
            return super().reducer_override(obj)
        return reduced


def _reduce_memoryview(view: memoryview) -> tuple[Any, tuple[Any, ...]]:
    if not view.contiguous:
        copy = view.tobytes()
        view = memoryview(copy if view.readonly else bytearray(copy)).cast(view.format, view.shape)
    return rebuild_memoryview, (pickle.PickleBuffer(view), view.format, view.shape)


def rebuild_memoryview(buffer: Any, format: str, shape: tuple[int, ...]) -> memoryview:
    """A pickled ``memoryview``, over the bytes it came back as (in the
    pickle: ``bytes`` or ``bytearray``; out of band: the buffer itself)."""
    view = memoryview(buffer).cast("B")
    if format == "B" and len(shape) == 1:
        return view
    return view.cast(format, shape)


def _travels_by_value(obj: Any) -> bool:
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str) or module == "__main__":
        return True
    by_value = cloudpickle.list_registry_pickle_by_value()
    return any(module == name or module.startswith(name + ".") for name in by_value)


def _dump(magic: bytes, record: tuple) -> list[Buffer]:
    return dump_pieces(magic, record)


def dump_pieces(
    magic: bytes,
    record: Any,
    out_of_band: list[pickle.PickleBuffer] | None = None,
    out_of_band_bytes: int = 0,
) -> list[Buffer]:
    """Pickles ``record`` after ``magic``, as the pieces the pickle is made
    of; with the standard pickler when it can, cloudpickle otherwise. Given
    an ``out_of_band`` list, buffers of ``out_of_band_bytes`` or more go
    there instead of into the pickle."""
    threshold = callback = None
    if out_of_band is not None:
        threshold, kept = out_of_band_bytes, out_of_band

        def callback(buffer: pickle.PickleBuffer) -> bool:
            if buffer.raw().nbytes < out_of_band_bytes:
                return True  # in band
            kept.append(buffer)
            return False

    sink = _Pieces(magic)
    try:
        pickler: _Reducers = _PlainPickler(sink, protocol=PICKLE_PROTOCOL, buffer_callback=callback)
        pickler.out_of_band_bytes = threshold
        pickler.dump(record)
    except (_ByValue, pickle.PicklingError, AttributeError, TypeError):
        if out_of_band is not None:
            out_of_band.clear()
        sink = _Pieces(magic)
        pickler = _CloudPickler(sink, protocol=PICKLE_PROTOCOL, buffer_callback=callback)
        pickler.out_of_band_bytes = threshold
        pickler.dump(record)
    return sink.pieces


def _view(data: Buffer, what: str) -> memoryview:
    try:
        return memoryview(data).cast("B")
    except TypeError as exc:
        raise CodecError(f"a {what} payload must be bytes, not {type(data).__name__}") from exc


def _loads(data: Buffer, what: str) -> Any:
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise CodecError(
            f"the {what} could not be unpickled: {type(exc).__name__}: {exc}; "
            "if a module is missing, install it where the payload is decoded"
        ) from exc


def _load(data: Buffer, magic: bytes, what: str) -> Any:
    view = _view(data, what)
    if view[: len(magic)] != magic:
        raise CodecError(
            f"the {what} payload does not start with {magic!r}: it was not made by this "
            "codec (or by a different version of it); use the same distribute_challenge "
            "version for the client and the workers"
        )
    return _loads(view[len(magic) :], f"{what} payload")
