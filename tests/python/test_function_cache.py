"""A function travels once: the client pickles it at its first call, the
gateway keeps it by digest and hands it to each worker once, the worker keeps
it unpickled. What the user sees never changes: a gateway that restarted or
evicted the function costs a round trip, not a call.

On each transport, against the real gateway and workers: what travels
(counted by the gateway's `/metrics`), a miss after a gateway restart, a
cache too small to keep anything, a forged digest, and the semantics of
capture (at the first call, anew on re-decoration).
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys

import cloudpickle
import grpc
import pytest
from test_monitoring import Scrape, free_port

from distribute_challenge import compute_this
from distribute_challenge._pb import gateway_pb2
from mystic_wire import OK, attach, decode_response, encode_call, encode_function

# The worker cannot import this module: what it defines travels by value
# (the client registers it so by itself; the raw requests here need it too).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SCALE = 10


def scaled(x):
    return x * SCALE


def pid(_tag=None):
    return os.getpid()


def request_bytes(port: int) -> float:
    return Scrape(port).value("mystic_transport_bytes_total", direction="request")


def function_unknown(port: int) -> float:
    return Scrape(port).value("mystic_rejected_calls_total", reason="function-unknown")


def execute(gateway, payload: bytes):
    response = gateway.stub().Execute(gateway_pb2.ExecuteRequest(payload=payload), timeout=30)
    return decode_response(response.payload)


@pytest.fixture
def metered(start_gateway):
    port = free_port()
    gateway = start_gateway("--workers", "1", "--metrics-listen", f"127.0.0.1:{port}")
    return gateway, port


def test_after_the_first_call_only_the_digest_travels(metered):
    gateway, port = metered
    captured = encode_function(scaled)
    call = encode_call(captured.digest, (4,), {}, ())

    first = execute(gateway, attach(captured, call))
    assert (first.kind, first.value) == (OK, 40)
    before = request_bytes(port)
    second = execute(gateway, call)
    assert (second.kind, second.value) == (OK, 40)
    # The gateway knew the function and so did the worker: the worker got
    # the call alone, not the function with it.
    assert request_bytes(port) - before == len(call)
    assert function_unknown(port) == 0


def test_the_client_sends_the_function_once(metered):
    gateway, port = metered
    # Inline calls (no shared-memory header), to count their bytes exactly.
    remote = compute_this(server=gateway.url, shared_memory_threshold=None)(scaled)
    assert remote(1).run() == 10
    before = request_bytes(port)
    assert [remote(x).run() for x in range(5)] == [0, 10, 20, 30, 40]
    digest = remote._captured().function.digest
    by_digest = sum(len(encode_call(digest, (x,), {}, (), "scaled")) for x in range(5))
    assert request_bytes(port) - before == by_digest


def test_a_digest_the_gateway_does_not_hold_is_refused_as_function_unknown(gateway):
    call = encode_call(encode_function(scaled).digest, (1,), {}, ())
    with pytest.raises(grpc.RpcError) as caught:
        execute(gateway, call)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ("mystic-error", "function-unknown") in tuple(caught.value.trailing_metadata())
    assert compute_this(server=gateway.url)(scaled)(2).run() == 20


def test_a_function_under_another_functions_digest_is_refused(gateway):
    honest = encode_function(scaled)
    forged = encode_function(pid)._replace(digest=honest.digest)
    with pytest.raises(grpc.RpcError) as caught:
        execute(gateway, attach(forged, encode_call(honest.digest, (1,), {}, ())))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "digest" in caught.value.details()
    # Nothing was kept under the honest digest, and the gateway is fine.
    assert compute_this(server=gateway.url)(scaled)(3).run() == 30


def test_a_restarted_gateway_is_given_the_function_again(launcher):
    port = free_port()
    flags = ("--workers", "1", "--listen", f"127.0.0.1:{free_port()}")
    first = launcher.start(*flags, "--metrics-listen", f"127.0.0.1:{port}")
    remote = compute_this(server=first.url)(scaled)
    try:
        assert remote(1).run() == 10
    finally:
        launcher.stop(first)
    second = launcher.start(*flags, "--metrics-listen", f"127.0.0.1:{port}")
    try:
        # On a fresh channel (each asyncio.run makes its own), so that the
        # old one's reconnect backoff plays no part.
        assert asyncio.run(remote(2).async_run()) == 20
        assert function_unknown(port) == 1
        assert asyncio.run(remote(3).async_run()) == 30
        assert function_unknown(port) == 1
    finally:
        launcher.stop(second)


def test_a_function_no_gateway_keeps_costs_a_refusal_only_now_and_then(start_gateway):
    port = free_port()
    # Smaller than any function's pickle (as 0 is): nothing is kept.
    gateway = start_gateway(
        "--function-cache-bytes", "100", "--metrics-listen", f"127.0.0.1:{port}"
    )
    remote = compute_this(server=gateway.url)(scaled)
    assert [remote(x).run() for x in range(10)] == [10 * x for x in range(10)]
    # Refused at the 2nd, 3rd, 5th and 9th calls: each refusal doubles the
    # run of calls that carry the function.
    assert function_unknown(port) == 4


def test_a_call_too_large_with_its_function_is_refused_whatever_the_cache_holds(start_gateway):
    from distribute_challenge import PayloadTooLarge

    gateway = start_gateway("--max-payload-bytes", "20000")
    ballast = os.urandom(12_000)
    remote = compute_this(server=gateway.url)(lambda data: len(data) + len(ballast))
    assert remote(b"").run() == 12_000
    # Alone the call fits; with the function the workers need, it does not.
    with pytest.raises(PayloadTooLarge):
        remote(b"x" * 10_000).run()
    assert remote(b"y").run() == 12_001


def test_partials_and_callable_objects_are_remote_functions(server):
    class Times:
        def __init__(self, factor):
            self.factor = factor

        def __call__(self, x):
            return self.factor * x

    assert compute_this(server=server)(functools.partial(scaled, 4))().run() == 40
    assert compute_this(server=server)(Times(3))(5).run() == 15


def test_a_function_is_captured_at_its_first_call(server):
    global SCALE
    remote = compute_this(server=server)(scaled)
    before = SCALE
    try:
        SCALE = 3
        assert remote(2).run() == 6
        SCALE = 5
        # Captured with the globals it used at its first call, as Ray does.
        assert remote(2).run() == 6
        # Decorated anew, it is captured anew.
        assert compute_this(server=server)(scaled)(2).run() == 10
    finally:
        SCALE = before


def test_closures_are_captured_with_what_they_close_over(server):
    def make(offset):
        return compute_this(server=server)(lambda x: x + offset)

    plus_one, plus_two = make(1), make(2)
    assert (plus_one(10).run(), plus_two(10).run()) == (11, 12)
    assert (plus_one(20).run(), plus_two(20).run()) == (21, 22)


def test_depmodules_still_bind_at_every_call(server):
    remote = compute_this(server=server, depmodules=["json"])(uses_json)
    assert remote([1]).run() == "[1]"
    assert remote({"a": 2}).run() == '{"a": 2}'


def uses_json(value):
    return json.dumps(value)  # noqa: F821 - bound by depmodules in the worker


def test_more_functions_than_a_worker_keeps_all_still_run(start_gateway):
    # One worker, 300 functions (a worker keeps 256): the first ones are
    # evicted there, and calling them again costs a miss, not a failure.
    gateway = start_gateway("--workers", "1")
    remotes = [compute_this(server=gateway.url)(make_adder(n)) for n in range(300)]
    assert [remote(1).run() for remote in remotes] == [n + 1 for n in range(300)]
    assert [remotes[n](2).run() for n in (0, 1, 299)] == [2, 3, 301]
    assert gateway.restarts() == 0


def make_adder(n):
    return lambda x: x + n


async def _first_calls_at_once(remote, count):
    return await asyncio.gather(*(remote(x).async_run() for x in range(count)))


def test_many_first_calls_at_once_all_carry_or_find_the_function(server):
    remote = compute_this(server=server)(scaled)
    assert asyncio.run(_first_calls_at_once(remote, 200)) == [10 * x for x in range(200)]
