"""The exception tree of the system: every exception the client raises for a
failure of the system itself, and the ones the payload format raises or carries.

They live with the payload format because both sides need part of the tree:
the codec raises :class:`SerializationError` and :class:`CodecError`, and the
worker sends a :class:`RemoteError`. ``distribute_challenge`` re-exports the
public ones and shows them as ``distribute_challenge.X``.

The function's own exception is not among them: it is re-raised with its own
type. Only when that exception cannot travel (it cannot be pickled in the
worker) does the caller get a :class:`RemoteError` in its place.

Exception tree::

    Exception
    ├── DistributeError            base class of every failure of the system
    │   ├── WorkerCrashed          the worker died during the call (exit, signal)
    │   ├── CallTimeout            the call ran past its deadline
    │   ├── ServerUnavailable      no gateway at that address, or it is shutting down
    │   ├── ServerBusy             the gateway's queue of waiting calls stayed full
    │   ├── PayloadTooLarge        the arguments or the result are over the size limit
    │   ├── SerializationError     the arguments or the result cannot be (un)pickled
    │   │   └── CodecError         a payload is not well formed (magic, truncation)
    │   └── AuthenticationError    the token is missing or wrong
    └── RemoteError                stands in for a function's exception that could
                                   not be pickled; carries its type name, message
                                   and remote traceback as text
"""

from __future__ import annotations


class DistributeError(Exception):
    """Base class of every failure of the system (not of the remote function)."""


class WorkerCrashed(DistributeError):
    """The worker process died while running the call; the gateway replaced it."""


class CallTimeout(DistributeError):
    """The call did not finish before its deadline; its worker was replaced."""


class ServerUnavailable(DistributeError):
    """The gateway cannot be reached, or it is shutting down."""


class ServerBusy(DistributeError):
    """The gateway's queue of calls waiting for a worker stayed full: the call,
    which never ran, was sent again with backoff until its ``busy_timeout``
    (or its ``timeout``) ran out."""


class PayloadTooLarge(DistributeError):
    """The encoded arguments or result are over the gateway's size limit."""


class SerializationError(DistributeError):
    """The function, its arguments or its result cannot be pickled or unpickled."""


class CodecError(SerializationError):
    """A payload is not well formed: wrong magic, truncated or corrupt."""


class AuthenticationError(DistributeError):
    """The gateway refused the call's token (missing or wrong)."""


class RemoteError(Exception):
    """Stands in for an exception raised by the remote function that could not
    be pickled in the worker.

    Attributes:
        type_name: qualified name of the original exception's type.
        message: ``str()`` of the original exception.
        remote_traceback: the original traceback, formatted in the worker.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(type_name, message, remote_traceback)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return (
            f"{self.type_name}: {self.message} (the remote function raised this exception, "
            "which could not be pickled; the remote traceback follows)\n"
            f"{self.remote_traceback}"
        )
