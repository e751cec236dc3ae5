"""The payload format (``mystic_wire``), without a gateway."""

import hashlib
import pickle
import threading
import typing

import pytest

from distribute_challenge import SerializationError
from mystic_wire import (
    ERROR,
    FUNCTION_MAGIC,
    MISS_MAGIC,
    OK,
    RAISED,
    REQUEST_MAGIC,
    RESPONSE_MAGIC,
    CodecError,
    attach,
    decode_call,
    decode_request,
    decode_response,
    encode_call,
    encode_function,
    encode_miss,
    encode_request,
    encode_response,
    split_request,
)


def add(a, b=0):
    return a + b


def test_the_gateway_checks_these_magics():
    # Defined in src/wire/ (the gateway's), pinned by tests/vectors/wire_records.txt.
    assert (REQUEST_MAGIC, FUNCTION_MAGIC, MISS_MAGIC) == (b"MCQ2", b"MCA2", b"MCM2")
    assert RESPONSE_MAGIC == b"MCR1"


def test_request_round_trip():
    payload = encode_request(add, (1,), {"b": 2}, (("json", ("js",)),))
    assert payload.startswith(FUNCTION_MAGIC)
    request = decode_request(payload)
    assert request.function(*request.args, **request.kwargs) == 3
    assert request.depmodules == (("json", ("js",)),)


def test_a_function_is_named_by_the_digest_of_its_pickle():
    function = encode_function(add)
    assert function.digest == hashlib.sha256(function.pickled).digest()
    call = encode_call(function.digest, (1,), {}, ())
    assert call.startswith(REQUEST_MAGIC + function.digest)
    by_digest = split_request(call)
    assert (by_digest.digest, by_digest.pickled_function) == (function.digest, None)
    attached = split_request(attach(function, call))
    assert attached.digest == function.digest
    assert attached.pickled_function == function.pickled
    assert decode_call(attached.call) == ((1,), {}, ())
    assert encode_miss(function.digest) == MISS_MAGIC + function.digest


def test_type_variables_and_bound_methods_travel_with_cloudpickle():
    T = typing.TypeVar("T")
    T.__module__ = "__main__"  # as if made in the caller's script

    class Counter:
        def bump(self, by):
            return by + 1

    for argument in (T, Counter().bump):
        call = encode_call(bytes(32), (argument,), {}, ())
        assert b"cloudpickle" in call
    (method,) = decode_call(
        split_request(encode_call(bytes(32), (Counter().bump,), {}, ())).call
    ).args
    assert method(1) == 2


def test_a_call_by_digest_alone_cannot_be_decoded_without_its_function():
    call = encode_call(encode_function(add).digest, (1,), {}, ())
    with pytest.raises(CodecError, match="by digest only"):
        decode_request(call)


def test_plain_data_is_pickled_without_cloudpickle_and_main_classes_by_value():
    call = encode_call(bytes(32), (1, "two", [3.0], {"four": b"5"}), {}, ())
    assert b"cloudpickle" not in call
    assert decode_call(split_request(call).call).args == (1, "two", [3.0], {"four": b"5"})

    class Point:
        def __init__(self, x):
            self.x = x

    # As if defined in the caller's script: the standard pickler would name
    # it, and the worker could not find it by that name.
    Point.__module__ = "__main__"
    Point.__qualname__ = "Point"
    call = encode_call(bytes(32), (Point(3),), {}, ())
    assert b"cloudpickle" in call  # its rebuilder: the class travelled by value
    (point,) = decode_call(split_request(call).call).args
    assert point.x == 3


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda t: t.__name__)
def test_decode_accepts_any_bytes_like(wrap):
    payload = encode_request(add, (2, 3), {}, ())
    assert decode_request(wrap(payload)).args == (2, 3)
    view = memoryview(b"padding" + payload)[len(b"padding") :]
    assert decode_request(view).args == (2, 3)


def test_closures_and_lambdas_travel_by_value():
    offset = 10
    request = decode_request(encode_request(lambda x: x + offset, (5,), {}, ()))
    assert request.function(*request.args) == 15


@pytest.mark.parametrize(
    ("kind", "value"),
    [(OK, {"result": [1, 2, 3]}), (RAISED, ValueError("boom")), (ERROR, "what to do")],
)
def test_response_round_trip(kind, value):
    response = decode_response(encode_response(kind, value, "out\n", "err\n"))
    assert response.kind == kind
    assert type(response.value) is type(value)
    assert repr(response.value) == repr(value)
    assert (response.stdout, response.stderr) == ("out\n", "err\n")


def test_unpicklable_arguments_are_a_serialization_error():
    with pytest.raises(SerializationError, match="cannot pickle the call to add"):
        encode_request(add, (threading.Lock(),), {}, ())


def test_unpicklable_functions_are_a_serialization_error():
    lock = threading.Lock()
    with pytest.raises(SerializationError, match="cannot pickle the function"):
        encode_function(lambda: lock)


def test_unpicklable_results_are_a_serialization_error():
    with pytest.raises(SerializationError):
        encode_response(OK, (x for x in ()), "", "")


@pytest.mark.parametrize("decode", [decode_request, decode_response])
@pytest.mark.parametrize(
    "data", [b"", b"MC", b"XXXX1234", b"mcq2", b"MCR0abc", b"MCQ1" + bytes(40)]
)
def test_bad_magic_is_a_codec_error(decode, data):
    with pytest.raises(CodecError, match="does not start with"):
        decode(data)


def test_a_request_is_not_a_response_and_back():
    with pytest.raises(CodecError):
        decode_response(encode_request(add, (), {}, ()))
    with pytest.raises(CodecError):
        decode_request(encode_response(OK, 1, "", ""))


@pytest.mark.parametrize("decode", [decode_request, decode_response])
def test_every_truncation_is_a_codec_error(decode):
    if decode is decode_request:
        payload = encode_request(add, (1, "two", [3.0]), {"b": 4}, (("json", ()),))
    else:
        payload = encode_response(OK, {"a": [1, 2, "three"]}, "out", "err")
    for end in range(len(payload)):
        with pytest.raises(CodecError):
            decode(payload[:end])


@pytest.mark.parametrize("decode", [decode_request, decode_response])
def test_garbage_after_the_magic_is_a_codec_error(decode):
    for garbage in [b"\x00\x01\x02", b"not a pickle", bytes(range(256))]:
        if decode is decode_request:
            function = encode_function(add)
            payload = attach(function, REQUEST_MAGIC + function.digest + garbage)
        else:
            payload = RESPONSE_MAGIC + garbage
        with pytest.raises(CodecError, match="could not be unpickled"):
            decode(payload)


def test_records_of_the_wrong_shape_are_codec_errors():
    def wrapped(magic, record):
        return magic + pickle.dumps(record, protocol=5)

    function = encode_function(add)
    bad_calls = [((), {}), ((), {}, (), ()), ([], {}, ()), ((), [], ())]
    for record in bad_calls:
        with pytest.raises(CodecError):
            decode_request(attach(function, wrapped(REQUEST_MAGIC + function.digest, record)))
    not_callable = function._replace(pickled=pickle.dumps("not callable"))
    with pytest.raises(CodecError, match="not callable"):
        decode_request(attach(not_callable, encode_call(function.digest, (), {}, ())))
    bad_responses = [("ok", 1, ""), ("maybe", 1, "", ""), ("ok", 1, b"", ""), ("raised", 1, "", "")]
    for record in bad_responses:
        with pytest.raises(CodecError):
            decode_response(wrapped(RESPONSE_MAGIC, record))


def test_non_bytes_input_is_a_codec_error():
    with pytest.raises(CodecError):
        decode_request("MCQ2 text")  # type: ignore[arg-type]


def test_codec_errors_are_serialization_errors():
    assert issubclass(CodecError, SerializationError)
