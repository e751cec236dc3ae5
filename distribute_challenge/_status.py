"""gRPC status → client exception: the gateway's error table in reverse, in one place.

==================  ===========================  ===================
status code         ``mystic-error`` (trailing)  raised
==================  ===========================  ===================
UNAVAILABLE         unavailable                  ServerUnavailable
DEADLINE_EXCEEDED   call-timeout                 CallTimeout
ABORTED             worker-crashed               WorkerCrashed
UNAUTHENTICATED                                  AuthenticationError
RESOURCE_EXHAUSTED  payload-too-large            PayloadTooLarge
RESOURCE_EXHAUSTED  queue-wait                   ServerBusy
RESOURCE_EXHAUSTED  queue-full (or anything)     ServerBusy
INVALID_ARGUMENT    invalid-request              DistributeError
FAILED_PRECONDITION function-unknown             (sent again, attached)
FAILED_PRECONDITION segment-unknown              (sent again, inline)
anything else                                    DistributeError
==================  ===========================  ===================

A call of a stream that fails in the gateway comes back as a ``CallError``
with the same code and kind (:func:`call_error`).

A ``RESOURCE_EXHAUSTED`` without the metadata key (e.g. raised by a proxy)
counts as too large when its message says a message was too large.

A failed call comes from the extension as ``mystic_native.CallFailed``, whose
``args`` are ``(code, message, kind)``; :class:`StatusCode` names the codes.

Only ``queue-full`` and ``queue-wait`` (:func:`refusal`) are retried, by
``_retry.py``: nothing ran. ``queue-wait`` is the refusal of a gateway
started with ``--max-queue-wait`` (a call that no worker took within that
time).
"""

from __future__ import annotations

import enum
import re
from typing import NoReturn

from mystic_native import CallFailed
from mystic_wire import (
    AuthenticationError,
    CallTimeout,
    DistributeError,
    PayloadTooLarge,
    ServerBusy,
    ServerUnavailable,
    WorkerCrashed,
)

from ._target import Target


class StatusCode(enum.IntEnum):
    """gRPC's status codes."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


ERROR_KIND_KEY = "mystic-error"
PAYLOAD_TOO_LARGE = "payload-too-large"
QUEUE_FULL = "queue-full"
QUEUE_WAIT = "queue-wait"
FUNCTION_UNKNOWN = "function-unknown"
SEGMENT_UNKNOWN = "segment-unknown"

_TOO_LARGE_WORDS = re.compile(r"too large|larger than", re.IGNORECASE)


def refusal(exc: CallFailed) -> str | None:
    """``QUEUE_FULL`` or ``QUEUE_WAIT`` when the gateway refused the call before
    any worker took it (nothing ran); None for every other failure."""
    code, _, kind = parts(exc)
    if code != StatusCode.RESOURCE_EXHAUSTED:
        return None
    return kind if kind in (QUEUE_FULL, QUEUE_WAIT) else None


def function_unknown(exc: CallFailed) -> bool:
    """The gateway does not hold the function a call named by digest (it
    restarted, or evicted it): the call is sent again with it attached."""
    code, _, kind = parts(exc)
    return code == StatusCode.FAILED_PRECONDITION and kind == FUNCTION_UNKNOWN


def segment_unknown(exc: CallFailed) -> bool:
    """The gateway holds no session or segment by the name a call gave (the
    client's segment connection closed, or the gateway restarted): the call
    is sent again inline."""
    code, _, kind = parts(exc)
    return code == StatusCode.FAILED_PRECONDITION and kind == SEGMENT_UNKNOWN


def raise_from_rpc_error(exc: CallFailed, target: Target, retried: str = "") -> NoReturn:
    """Raises the client exception for a failed call to ``target``, chained to ``exc``.
    ``retried`` says how often a busy call was sent (see ``_retry.py``)."""
    code, details, kind = parts(exc)
    raise error_for(code, details, kind, target, retried) from exc


def call_error(error: tuple[int, str, str], target: Target) -> DistributeError:
    """The client exception for one call of a stream that failed in the
    gateway, from its ``(code, kind, message)``."""
    code, kind, message = error
    return error_for(_code(code), message or "no details", kind or None, target)


def parts(exc: CallFailed) -> tuple[StatusCode, str, str | None]:
    """``(code, details, kind)`` of a failed call."""
    code, details, kind = exc.args
    return _code(code), details or "no details", kind


def _code(number: int) -> StatusCode:
    try:
        return StatusCode(number)
    except ValueError:
        return StatusCode.UNKNOWN


def error_for(
    code: StatusCode, details: str, kind: str | None, target: Target, retried: str = ""
) -> DistributeError:
    """The client exception for a call to ``target`` that failed with ``code``
    (and the ``mystic-error`` word ``kind``, if any)."""
    where = target.where()
    if code == StatusCode.UNAVAILABLE and target.balanced:
        return ServerUnavailable(
            f"a gateway of {target.url} was unavailable for the call: {details}. Either the "
            "gateway running it went away (the others keep taking new calls: call again) or "
            "none of them is running: check them and server= (or $DISTRIBUTE_SERVER)."
        )
    if code == StatusCode.UNAVAILABLE:
        return ServerUnavailable(
            f"{where} is unavailable: {details}. Check that the gateway is running and that "
            "server= (or $DISTRIBUTE_SERVER) points at it, then retry."
        )
    if code == StatusCode.DEADLINE_EXCEEDED:
        return CallTimeout(
            f"the call did not finish in time ({where}: {details}). Raise "
            "compute_this(timeout=...) or the gateway's --call-timeout, or make the call "
            "shorter."
        )
    if code == StatusCode.ABORTED:
        return WorkerCrashed(
            f"the worker running the call died ({where}: {details}). The call was not "
            "retried: look for os._exit, crashes in C extensions or memory limits in the "
            "function, then call again."
        )
    if code == StatusCode.UNAUTHENTICATED:
        return AuthenticationError(
            f"{where} refused the call's credentials: {details}. Pass token= to "
            "compute_this or set $DISTRIBUTE_TOKEN to the gateway's token."
        )
    if code == StatusCode.RESOURCE_EXHAUSTED:
        if kind == PAYLOAD_TOO_LARGE or (kind is None and _TOO_LARGE_WORDS.search(details)):
            return PayloadTooLarge(
                f"the call's payload is too large for {where}: {details}. Send less data "
                "per call, or start the gateway with a larger --max-payload-bytes."
            )
        tried = f" ({retried})" if retried else ""
        verb = "are" if target.balanced else "is"
        return ServerBusy(
            f"{where} {verb} busy: {details}{tried}. Retry later, raise "
            "compute_this(busy_timeout=...), or start the gateway with more --workers or a "
            "larger --queue-capacity."
        )
    if code == StatusCode.INVALID_ARGUMENT:
        return DistributeError(
            f"{where} refused the request as malformed: {details}. Use the same "
            "distribute_challenge version for the client and the workers."
        )
    return DistributeError(f"the call to {where} failed with status {code.name}: {details}")
