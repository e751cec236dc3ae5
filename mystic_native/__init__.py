"""mystic_native: the native core of mysticchallenge's Python side.

A Rust extension module (``native/`` in the repository, on the gateway's own
library), built into the same wheel as the gateway. What it exports is
listed in ``_native.pyi``:

- the wire format, defined once in the gateway's ``src/wire/``: the records'
  magics and sizes, splitting and building requests, the headers and bodies
  of calls and results in segments and the door's records (``mystic_wire``
  keeps the pickling policy and the exception tree, and raises its
  ``CodecError`` for a malformed record);
- a worker's link to the gateway (``WorkerLink``), which hands the worker
  its requests (``Message``) and the segments they bring (``Segment``)
  without a copy, and sends its responses; it raises ``GatewayGone`` when
  the gateway has gone and ``ProtocolError`` when it broke the protocol;
- the client's calls (``Client``: one target's connections; ``Stream``: an
  open ``ExecuteStream``; ``Completions``: how calls made from asyncio
  finish on its loop); a failed call raises ``CallFailed``.
"""

from ._native import (
    ALIGNMENT,
    CHUNK_MAGIC,
    CLOSE_REQUEST,
    DIGEST_BYTES,
    FUNCTION_MAGIC,
    KEPT_MAGIC,
    MISS_MAGIC,
    NEXT_REQUEST,
    RECORD_BYTES,
    RECORD_DROP,
    RECORD_GET,
    RECORD_HELLO,
    RECORD_PUT,
    REQUEST_MAGIC,
    RESPONSE_MAGIC,
    SEGMENT_CALL_MAGIC,
    SEGMENT_RESPONSE_MAGIC,
    SOURCE_HERE,
    SOURCE_IN_CALL,
    STATUS_BAD_REQUEST,
    STATUS_BUSY,
    STATUS_OK,
    STATUS_REFUSED,
    STATUS_TOO_LARGE,
    STATUS_UNKNOWN,
    STREAM_MAGIC,
    TOKEN_BYTES,
    CallFailed,
    Client,
    Completions,
    GatewayGone,
    Message,
    ProtocolError,
    Segment,
    Stream,
    WorkerLink,
    __version__,
    attach,
    by_digest_header,
    call_header,
    encode_body,
    encode_miss,
    get_workers_of_each,
    pack_record,
    parse_call,
    parse_response,
    response_header,
    split_request,
    strip_kept,
    unpack_record,
)

__all__ = [
    "ALIGNMENT",
    "CHUNK_MAGIC",
    "CLOSE_REQUEST",
    "CallFailed",
    "Client",
    "Completions",
    "DIGEST_BYTES",
    "FUNCTION_MAGIC",
    "GatewayGone",
    "KEPT_MAGIC",
    "MISS_MAGIC",
    "Message",
    "NEXT_REQUEST",
    "ProtocolError",
    "RECORD_BYTES",
    "RECORD_DROP",
    "RECORD_GET",
    "RECORD_HELLO",
    "RECORD_PUT",
    "REQUEST_MAGIC",
    "RESPONSE_MAGIC",
    "SEGMENT_CALL_MAGIC",
    "SEGMENT_RESPONSE_MAGIC",
    "SOURCE_HERE",
    "SOURCE_IN_CALL",
    "STATUS_BAD_REQUEST",
    "STATUS_BUSY",
    "STATUS_OK",
    "STATUS_REFUSED",
    "STATUS_TOO_LARGE",
    "STATUS_UNKNOWN",
    "STREAM_MAGIC",
    "Segment",
    "Stream",
    "TOKEN_BYTES",
    "WorkerLink",
    "__version__",
    "attach",
    "by_digest_header",
    "call_header",
    "encode_body",
    "encode_miss",
    "get_workers_of_each",
    "pack_record",
    "parse_call",
    "parse_response",
    "response_header",
    "split_request",
    "strip_kept",
    "unpack_record",
]
