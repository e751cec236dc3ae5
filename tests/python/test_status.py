"""The gRPC status → exception table (``distribute_challenge._status``).

The end-to-end tests meet these statuses from the real gateway; this table
test also covers the ones the gateway cannot be made to send here
(UNAUTHENTICATED, a RESOURCE_EXHAUSTED raised by gRPC itself).
"""

import pytest

from distribute_challenge import (
    AuthenticationError,
    CallTimeout,
    DistributeError,
    PayloadTooLarge,
    ServerBusy,
    ServerUnavailable,
    WorkerCrashed,
)
from distribute_challenge._status import StatusCode as S
from distribute_challenge._status import raise_from_rpc_error
from distribute_challenge._target import parse_server
from mystic_native import CallFailed


@pytest.mark.parametrize(
    ("code", "kind", "details", "expected"),
    [
        (S.UNAVAILABLE, None, "connection refused", ServerUnavailable),
        (S.UNAVAILABLE, "unavailable", "shutting down", ServerUnavailable),
        (S.DEADLINE_EXCEEDED, None, "Deadline Exceeded", CallTimeout),
        (S.ABORTED, "worker-crashed", "died: exit code 3", WorkerCrashed),
        (S.UNAUTHENTICATED, None, "bad token", AuthenticationError),
        (S.RESOURCE_EXHAUSTED, "payload-too-large", "over the limit", PayloadTooLarge),
        (S.RESOURCE_EXHAUSTED, None, "Sent message larger than max (9 vs. 4)", PayloadTooLarge),
        (S.RESOURCE_EXHAUSTED, "queue-full", "queue is full", ServerBusy),
        (S.RESOURCE_EXHAUSTED, "queue-wait", "no worker was free in time", ServerBusy),
        (S.RESOURCE_EXHAUSTED, None, "queue is full", ServerBusy),
        (S.INVALID_ARGUMENT, "invalid-request", "bad magic", DistributeError),
        (S.INTERNAL, None, "decode failure", DistributeError),
    ],
)
def test_each_status_maps_to_its_exception(code, kind, details, expected):
    failure = CallFailed(code, details, kind)
    with pytest.raises(DistributeError) as caught:
        raise_from_rpc_error(failure, parse_server("grpc://127.0.0.1:1"))
    assert type(caught.value) is expected
    assert details in str(caught.value)
    assert caught.value.__cause__ is failure
