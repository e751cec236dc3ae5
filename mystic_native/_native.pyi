"""Stubs of the extension module ``mystic_native._native`` (native/src/).

The wire format (``native/src/wire.rs`` over the gateway's ``src/wire/``):
arguments typed ``_Buffer`` take any bytes-like object, and parts of one come
back as ``memoryview`` slices of it, not copies. A malformed record raises
``mystic_wire.CodecError``.

A worker's link to the gateway (``native/src/worker_link.rs``): requests
come as :class:`Message` objects (buffers, read without a copy), each with
the :class:`Segment` that came with it, if any.
"""

from collections.abc import Sequence

_Buffer = bytes | bytearray | memoryview
_Place = tuple[int, int, int]
"""A buffer's place in a segment: (offset, length, source)."""

__version__: str

# Requests, answers, streamed items (src/wire/calls.rs, answers.rs, items.rs).
REQUEST_MAGIC: bytes
FUNCTION_MAGIC: bytes
DIGEST_BYTES: int
RESPONSE_MAGIC: bytes
MISS_MAGIC: bytes
KEPT_MAGIC: bytes
STREAM_MAGIC: bytes
CHUNK_MAGIC: bytes
NEXT_REQUEST: bytes
CLOSE_REQUEST: bytes

def split_request(data: _Buffer) -> tuple[bytes, memoryview | None, memoryview, bool]:
    """A request's digest, its attached function's pickle (None when only the
    digest travels), its call (an ``MCQ2`` call's pickle, or a whole
    ``MCQ3`` call) and whether the call is an ``MCQ3`` one."""

def by_digest_header(digest: bytes) -> bytes:
    """The header of an ``MCQ2`` call of the function with ``digest``."""

def attach(pickled: _Buffer, call: _Buffer) -> bytes:
    """``call`` with the function ``pickled`` attached."""

def encode_miss(digest: bytes) -> bytes:
    """A worker's answer to a call of ``digest``, a function it does not hold."""

def strip_kept(response: _Buffer) -> tuple[bool, memoryview]:
    """Whether a worker's answer says it kept the call's attached function,
    and the answer without that mark."""

# Calls and results in segments (src/wire/segmented.rs).
SEGMENT_CALL_MAGIC: bytes
SEGMENT_RESPONSE_MAGIC: bytes
ALIGNMENT: int
SOURCE_HERE: int
SOURCE_IN_CALL: int

def call_header(digest: bytes, session: bytes, handle: int, result_threshold: int) -> bytes:
    """The header of an ``MCQ3`` call; its body follows."""

def response_header(handle: int = 0) -> bytes:
    """The header of an ``MCR2`` response; its body follows."""

def encode_body(pickle_bytes: int, buffers: Sequence[_Place]) -> bytes:
    """A body: a pickle of ``pickle_bytes`` and its buffers' places."""

def parse_call(call: _Buffer) -> tuple[bytes, int, int, int, tuple[_Place, ...], memoryview]:
    """An ``MCQ3`` call's session, handle, result threshold, pickle length,
    buffers and inline pickle."""

def parse_response(response: _Buffer) -> tuple[int, int, tuple[_Place, ...]]:
    """An ``MCR2`` response's handle, pickle length and buffers."""

# The segment sockets' records (src/wire/records.rs).
RECORD_BYTES: int
TOKEN_BYTES: int
RECORD_HELLO: bytes
RECORD_PUT: bytes
RECORD_GET: bytes
RECORD_DROP: bytes
STATUS_OK: int
STATUS_REFUSED: int
STATUS_TOO_LARGE: int
STATUS_BUSY: int
STATUS_UNKNOWN: int
STATUS_BAD_REQUEST: int

def pack_record(kind: bytes, status: int, handle: int, token: bytes) -> bytes:
    """A record: ``kind`` (4 bytes), ``status``, ``handle``, ``token`` (16 bytes)."""

def unpack_record(data: _Buffer) -> tuple[bytes, int, int, bytes]:
    """A record's kind, status, handle and token."""

# A worker's link (native/src/worker_link.rs, message.rs, segment.rs).

class GatewayGone(EOFError):
    """The gateway closed the link: the worker exits."""

class ProtocolError(Exception):
    """The gateway broke the link's protocol."""

class Segment:
    """A segment (a sealed memfd) that came with a request."""

    @property
    def closed(self) -> bool: ...
    def fileno(self) -> int:
        """Its descriptor, while it is open."""

    def close(self) -> None:
        """Closes its descriptor (its mappings stay)."""

class Message:
    """One request: a read-only buffer over the bytes it owns (copied off the
    link, or a sealed segment mapped), valid for as long as any view lives."""

    @property
    def segment(self) -> Segment | None:
        """The segment that came with it, if any."""

    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...

class WorkerLink:
    """A worker's end of its link (``fd``, taken over), speaking
    ``transport`` ("pipe" or "shm"); waits release the GIL."""

    def __init__(self, fd: int, transport: str, max_payload_bytes: int) -> None: ...
    def ready(self) -> None:
        """Tells the gateway, once, that the worker takes calls."""

    def receive(self) -> Message:
        """Waits for the next request."""

    def send(self, pieces: list[_Buffer], segment: int | None = None) -> None:
        """Sends one response made of ``pieces``, with the result ``segment``
        (a descriptor the caller keeps) if given."""

# The client's calls (``distribute_challenge`` drives them).

_Metadata = Sequence[tuple[str, str]]
_Workers = tuple[int, str, int, str, list[tuple[int, int, int, int, int, int]]]
_Result = tuple[int, str, bytes | tuple[int, str, str]]

class CallFailed(Exception):
    """A call failed: ``args`` are ``(code, message, kind)``: the gRPC status
    code, its message and the gateway's ``mystic-error`` word (or None)."""

class Completions:
    """One asyncio loop's finished calls: readable ``fileno()`` when some
    finished; ``drain()`` hands them out as ``(token, ok, value)``."""

    def __init__(self) -> None: ...
    def fileno(self) -> int: ...
    def drain(self) -> list[tuple[int, bool, object]]: ...
    def cancel(self, token: int) -> None:
        """Cancels the call of ``token`` (nothing if it finished)."""

class Stream:
    """An open ``ExecuteStream``."""

    @property
    def window(self) -> int | None:
        """The gateway's suggested window (``mystic-window``)."""
    def send(self, calls: list[tuple[int, _Buffer, bool]]) -> bool:
        """One message of calls ``(id, payload, items)``; False once ended."""
    def finish_sending(self) -> None: ...
    def receive(self) -> list[_Result] | None:
        """The next message's results, None at the end (GIL released)."""
    def receive_async(self, completions: Completions, token: int) -> None: ...
    def close(self) -> None:
        """Cancels the stream."""

class Client:
    """The connections to one target: ``gateways`` (``HOST:PORT`` or
    ``unix:PATH``), or a DNS name ``dns`` (``NAME:PORT``)."""

    def __init__(
        self,
        gateways: list[str],
        *,
        dns: str | None = None,
        tls: bool = False,
        ca_pem: bytes | None = None,
        authority: str | None = None,
    ) -> None: ...
    def execute(self, payload: _Buffer, metadata: _Metadata, timeout: float | None = None) -> bytes:
        """One call, blocking with the GIL released."""
    def execute_async(
        self,
        completions: Completions,
        token: int,
        payload: _Buffer,
        metadata: _Metadata,
        timeout: float | None = None,
    ) -> None: ...
    def get_workers(self, metadata: _Metadata, timeout: float | None = None) -> _Workers: ...
    def get_workers_async(
        self,
        completions: Completions,
        token: int,
        metadata: _Metadata,
        timeout: float | None = None,
    ) -> None: ...
    def open_stream(self, metadata: _Metadata, timeout: float | None = None) -> Stream: ...
    def open_stream_async(
        self,
        completions: Completions,
        token: int,
        metadata: _Metadata,
        timeout: float | None = None,
    ) -> None: ...

def get_workers_of_each(
    clients: list[Client], metadata: _Metadata, timeout: float | None = None
) -> list[tuple[bool, _Workers | CallFailed]]:
    """``get_workers`` of every client at once."""
