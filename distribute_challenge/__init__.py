"""distribute_challenge: run Python functions on a mysticchallenge gateway's workers.

Map of the package:

- ``_api.py``: ``compute_this``, the remote function and its call object.
- ``_executor.py``: ``Executor``, a ``concurrent.futures.Executor`` over those calls.
- ``joblib.py``: the joblib backend ``"mysticchallenge"``, registered when
  imported (needs joblib: the ``joblib`` extra).
- ``_outcome.py``: a response turned into the result (or the exception raised).
- ``_mapping.py``: ``map``, ``starmap``, their async twins and ``.stream()``,
  over one ``ExecuteStream``.
- ``_process.py``: this process's id, kept across ``os.fork()`` without a system call.
- ``_client.py``: the extension's clients, one per target per process, and
  how calls made from asyncio finish on its loop.
- ``_target.py``: the server address: one gateway, a list, or a DNS name.
- ``_token.py``: the token, and where it may be sent in plaintext.
- ``_gateways.py``: each gateway of a target on its own (``get_workers``).
- ``_status.py``: gRPC status codes → the exceptions below, in one function.
- ``_retry.py``: sending a call again while the gateway's queue is full.
- ``_by_value.py``: which modules' functions travel by value.
- ``_pb/``: gRPC stubs generated from ``proto/`` by ``tools/gen_stubs.py``,
  for a plain grpcio client of the proto (the ``grpc`` extra); the client
  itself does not use them.

The payload format, the depmodules spec and the exception tree are the
``mystic_wire`` package, shared with ``worker_shim``; the exceptions are
re-exported here and shown as ``distribute_challenge.X``.
"""

from mystic_wire import (
    AuthenticationError,
    CallTimeout,
    DistributeError,
    PayloadTooLarge,
    RemoteError,
    SerializationError,
    ServerBusy,
    ServerUnavailable,
    WorkerCrashed,
)

from ._api import compute_this
from ._executor import Executor

__all__ = [
    "AuthenticationError",
    "CallTimeout",
    "DistributeError",
    "Executor",
    "PayloadTooLarge",
    "RemoteError",
    "SerializationError",
    "ServerBusy",
    "ServerUnavailable",
    "WorkerCrashed",
    "compute_this",
]

# Show the public names as distribute_challenge.X (reprs, tracebacks, pickles).
for _name in __all__:
    globals()[_name].__module__ = "distribute_challenge"
del _name
