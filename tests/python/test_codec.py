"""The payload format (``mystic_wire``), without a gateway."""

import pickle
import threading

import pytest

from distribute_challenge import SerializationError
from mystic_wire import (
    ERROR,
    OK,
    RAISED,
    REQUEST_MAGIC,
    RESPONSE_MAGIC,
    CodecError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)


def add(a, b=0):
    return a + b


def test_the_gateway_checks_these_magics():
    assert REQUEST_MAGIC == b"MCQ1"
    assert RESPONSE_MAGIC == b"MCR1"


def test_request_round_trip():
    payload = encode_request(add, (1,), {"b": 2}, (("json", ("js",)),))
    assert payload.startswith(b"MCQ1")
    request = decode_request(payload)
    assert request.function(*request.args, **request.kwargs) == 3
    assert request.depmodules == (("json", ("js",)),)


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


def test_unpicklable_results_are_a_serialization_error():
    with pytest.raises(SerializationError):
        encode_response(OK, (x for x in ()), "", "")


@pytest.mark.parametrize("decode", [decode_request, decode_response])
@pytest.mark.parametrize("data", [b"", b"MC", b"XXXX1234", b"mcq1", b"MCR0abc"])
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
    magic = REQUEST_MAGIC if decode is decode_request else RESPONSE_MAGIC
    for garbage in [b"\x00\x01\x02", b"not a pickle", bytes(range(256))]:
        with pytest.raises(CodecError, match="could not be unpickled"):
            decode(magic + garbage)


def test_records_of_the_wrong_shape_are_codec_errors():
    def wrapped(magic, record):
        return magic + pickle.dumps(record, protocol=5)

    bad_requests = [(add, (), {}), ("not callable", (), {}, ()), (add, [], {}, ())]
    for record in bad_requests:
        with pytest.raises(CodecError):
            decode_request(wrapped(REQUEST_MAGIC, record))
    bad_responses = [("ok", 1, ""), ("maybe", 1, "", ""), ("ok", 1, b"", ""), ("raised", 1, "", "")]
    for record in bad_responses:
        with pytest.raises(CodecError):
            decode_response(wrapped(RESPONSE_MAGIC, record))


def test_non_bytes_input_is_a_codec_error():
    with pytest.raises(CodecError):
        decode_request("MCQ1 text")  # type: ignore[arg-type]


def test_codec_errors_are_serialization_errors():
    assert issubclass(CodecError, SerializationError)
