"""mystic_wire: the payload format that the client and the worker share.

The gateway moves payloads without looking inside; this package says what
they hold. The records' layouts (magics, headers, the bodies of segments,
the segment sockets' records) are the gateway's own definition
(``src/wire/``), which this package takes from the extension
``mystic_native``; it keeps the pickling policy and the exception tree. The
client (``distribute_challenge``) encodes requests and decodes responses,
the worker (``worker_shim``) the other way round. It imports nothing of
grpc, protobuf, asyncio or the client (only the standard library,
cloudpickle and the extension), so a worker starts without the client's
gRPC stack. Map of the package:

- ``_codec.py``: the request and response records, the pickling policy,
  encode and decode.
- ``_depmodules.py``: the depmodules spec: built on the client, imported and
  bound in the worker before a call.
- ``_exceptions.py``: the exception tree (``distribute_challenge`` re-exports
  the public part).
- ``_segments.py``: calls and results through shared memory, for a client on
  the gateway's host (``MCQ3``/``MCR2``, sealed memfd segments, buffers out
  of band); ``_records.py``: the messages of the sockets segments go over.
"""

from ._codec import (
    CHUNK_MAGIC,
    CLOSE_REQUEST,
    DIGEST_BYTES,
    ERROR,
    FUNCTION_MAGIC,
    KEPT_MAGIC,
    KINDS,
    MISS_MAGIC,
    NEXT_REQUEST,
    OK,
    PICKLE_PROTOCOL,
    RAISED,
    REQUEST_MAGIC,
    RESPONSE_MAGIC,
    STREAM_MAGIC,
    Buffer,
    Call,
    Chunk,
    DepModules,
    Function,
    Request,
    Response,
    Split,
    attach,
    decode_call,
    decode_chunk,
    decode_function,
    decode_request,
    decode_response,
    encode_call,
    encode_chunk,
    encode_function,
    encode_miss,
    encode_request,
    encode_response,
    encode_response_parts,
    split_request,
    strip_kept,
)
from ._depmodules import bind_depmodules, describe_depmodules
from ._exceptions import (
    AuthenticationError,
    CallTimeout,
    CodecError,
    DistributeError,
    PayloadTooLarge,
    RemoteError,
    SerializationError,
    ServerBusy,
    ServerUnavailable,
    WorkerCrashed,
)

__all__ = [
    "AuthenticationError",
    "Buffer",
    "CHUNK_MAGIC",
    "CLOSE_REQUEST",
    "Call",
    "CallTimeout",
    "Chunk",
    "CodecError",
    "DIGEST_BYTES",
    "DepModules",
    "DistributeError",
    "ERROR",
    "FUNCTION_MAGIC",
    "Function",
    "KEPT_MAGIC",
    "KINDS",
    "MISS_MAGIC",
    "NEXT_REQUEST",
    "OK",
    "PICKLE_PROTOCOL",
    "PayloadTooLarge",
    "RAISED",
    "REQUEST_MAGIC",
    "RESPONSE_MAGIC",
    "RemoteError",
    "Request",
    "Response",
    "STREAM_MAGIC",
    "SerializationError",
    "ServerBusy",
    "ServerUnavailable",
    "Split",
    "WorkerCrashed",
    "attach",
    "bind_depmodules",
    "decode_call",
    "decode_chunk",
    "decode_function",
    "decode_request",
    "decode_response",
    "describe_depmodules",
    "encode_call",
    "encode_chunk",
    "encode_function",
    "encode_miss",
    "encode_request",
    "encode_response",
    "encode_response_parts",
    "split_request",
    "strip_kept",
]
