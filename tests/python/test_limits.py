"""Size limits and malformed input: large payloads work, oversized ones are
PayloadTooLarge, garbage gets an error status, and the gateway stays healthy."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from distribute_challenge import PayloadTooLarge, ServerBusy, compute_this
from distribute_challenge._pb import gateway_pb2
from mystic_wire import ERROR, REQUEST_MAGIC, Function, attach, decode_response

EXECUTE = "/mysticchallenge.v1.Gateway/Execute"


def echo(value):
    return value


def make_bytes(size):
    return b"r" * size


def nap(seconds):
    time.sleep(seconds)
    return seconds


def _healthy(gateway) -> None:
    channel = grpc.insecure_channel(gateway.url.removeprefix("grpc://"))
    with channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert compute_this(server=gateway.url)(echo)("still serving").run() == "still serving"


def test_a_64_mib_payload_round_trips(remote):
    blob = os.urandom(64 << 20)
    assert remote(echo)(blob).run() == blob


def test_a_request_over_the_limit_is_payload_too_large(start_gateway):
    gateway = start_gateway("--max-payload-bytes", "100000")
    with pytest.raises(PayloadTooLarge, match="max-payload-bytes"):
        compute_this(server=gateway.url)(echo)(b"x" * 200_000).run()
    _healthy(gateway)


def test_a_response_over_the_limit_is_payload_too_large(start_gateway):
    gateway = start_gateway("--max-payload-bytes", "100000")
    restarts = gateway.restarts()
    with pytest.raises(PayloadTooLarge):
        compute_this(server=gateway.url)(make_bytes)(200_000).run()
    _healthy(gateway)
    assert compute_this(server=gateway.url)(make_bytes)(10).run() == b"r" * 10
    assert gateway.restarts() == restarts


@pytest.mark.parametrize("size", [0, 1, 7, 1000, 100_000])
def test_random_bytes_on_execute_get_an_error_status(gateway, size):
    channel = grpc.insecure_channel(gateway.url.removeprefix("grpc://"))
    with channel:
        execute = channel.unary_unary(EXECUTE, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as caught:
            execute(os.urandom(size), timeout=30)
    assert caught.value.code() != grpc.StatusCode.OK
    _healthy(gateway)


def test_a_payload_without_the_magic_is_invalid_argument(gateway):
    with pytest.raises(grpc.RpcError) as caught:
        gateway.stub().Execute(gateway_pb2.ExecuteRequest(payload=b"not a call"), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("mystic-error", "invalid-request") in tuple(caught.value.trailing_metadata())
    _healthy(gateway)


def test_magic_then_garbage_reaches_the_worker_which_answers_an_error(gateway):
    restarts = gateway.restarts()
    garbage = os.urandom(64)
    function = Function(hashlib.sha256(garbage).digest(), garbage)
    call = function.digest + os.urandom(64)
    response = gateway.stub().Execute(
        gateway_pb2.ExecuteRequest(payload=attach(function, REQUEST_MAGIC + call)), timeout=30
    )
    decoded = decode_response(response.payload)
    assert decoded.kind == ERROR
    assert "could not decode the call" in decoded.value
    _healthy(gateway)
    assert gateway.restarts() == restarts


def test_a_full_queue_is_server_busy(start_gateway):
    # One worker and room for one waiting call: of four simultaneous calls at
    # most two are running or waiting, so at least two are refused (the
    # client's retries are off: see test_retry.py for them).
    gateway = start_gateway("--workers", "1", "--queue-capacity", "1")
    function = compute_this(server=gateway.url, busy_timeout=0)(nap)

    async def main():
        calls = (function(1.0).async_run() for _ in range(4))
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(main())
    busy = [outcome for outcome in outcomes if isinstance(outcome, ServerBusy)]
    assert len(busy) >= 2, outcomes
    assert "queue" in str(busy[0])
    assert all(outcome == 1.0 for outcome in outcomes if outcome not in busy)
    _healthy(gateway)
