"""The worker's functions by digest (``worker_shim/_functions.py``) and how
the executor answers a call by digest: from the cache, or with a miss."""

from __future__ import annotations

from mystic_wire import (
    KEPT_MAGIC,
    MISS_MAGIC,
    OK,
    attach,
    decode_response,
    encode_call,
    encode_function,
    strip_kept,
)
from worker_shim._executor import execute
from worker_shim._functions import FunctionCache


def triple(x):
    return 3 * x


def run(payload: bytes, functions: FunctionCache) -> bytes:
    """The response, without the mark of a kept function."""
    return bytes(strip_kept(answer(payload, functions))[1])


def answer(payload: bytes, functions: FunctionCache) -> bytes:
    pieces, segment = execute(memoryview(payload), functions=functions)
    assert segment is None
    return b"".join(pieces)


def test_an_attached_function_is_kept_and_later_calls_by_digest_use_it():
    functions = FunctionCache()
    captured = encode_function(triple)
    call = encode_call(captured.digest, (2,), {}, ())
    assert run(call, functions) == MISS_MAGIC + captured.digest
    kept = answer(attach(captured, call), functions)
    assert kept.startswith(KEPT_MAGIC), "the gateway is told the function was kept"
    assert decode_response(strip_kept(kept)[1]) == (OK, 6, "", "")
    assert captured.digest in functions
    assert decode_response(run(encode_call(captured.digest, (5,), {}, ()), functions)).value == 15


def test_a_function_over_the_byte_bound_runs_but_is_not_said_to_be_kept():
    functions = FunctionCache(max_bytes=16)
    captured = encode_function(triple)
    response = answer(attach(captured, encode_call(captured.digest, (2,), {}, ())), functions)
    assert not response.startswith(KEPT_MAGIC)
    assert decode_response(response) == (OK, 6, "", "")
    assert captured.digest not in functions


def test_a_function_that_cannot_be_unpickled_is_not_kept():
    functions = FunctionCache()
    broken = encode_function(triple)._replace(pickled=b"\x80\x05not a pickle")
    response = decode_response(
        run(attach(broken, encode_call(broken.digest, (1,), {}, ())), functions)
    )
    assert response.kind == "error" and "could not decode" in response.value
    assert len(functions) == 0


def test_the_least_recently_used_go_first_by_count():
    functions = FunctionCache(max_functions=2, max_bytes=1000)
    for name in (b"a", b"b"):
        functions.put(name, name, 1)
    assert functions.get(b"a") == b"a"  # now b is the least recently used
    functions.put(b"c", b"c", 1)
    assert (b"a" in functions, b"b" in functions, b"c" in functions) == (True, False, True)


def test_the_least_recently_used_go_first_by_bytes():
    functions = FunctionCache(max_functions=10, max_bytes=100)
    functions.put(b"a", "a", 60)
    functions.put(b"b", "b", 30)
    functions.put(b"c", "c", 30)
    assert (b"a" in functions, b"b" in functions, b"c" in functions) == (False, True, True)
    # One larger than the whole bound is not kept, and evicts nothing.
    functions.put(b"huge", "huge", 101)
    assert b"huge" not in functions and len(functions) == 2
    # Kept again under the same digest: counted once.
    functions.put(b"b", "b", 30)
    functions.put(b"d", "d", 40)
    assert len(functions) == 3
