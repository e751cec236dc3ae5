"""Property tests (Hypothesis) of the payload codec and of the worker's decoders.

- Round trips: any call (functions by value and by reference, arbitrary
  arguments, keyword arguments and depmodules specs) and any response (each
  kind, arbitrary values, exceptions and printed text) decode to what was
  encoded; a response's pieces join to its payload.
- Bad input: every truncation of a payload, and payloads with bytes replaced,
  inserted or deleted, either decode to a well-typed record or raise
  ``CodecError``; never another exception. The worker's entry points keep
  the same promise one level up: ``execute`` answers any request bytes with
  a decodable response, and the serve loop over a pipe link (a real socket
  pair) answers valid lines and ends with status 1 at the first line that
  is not base64. (The shared-memory frame header is the gateway crate's,
  tested there.)

Corrupt payloads hold no class by value (see ``response_payloads``).
Decoding corrupt input runs under a temporary address-space limit
(:func:`memory_headroom`): pickle's ``LONG_BINPUT`` opcode makes the
unpickler grow its memo to twice the index it names, so 9 corrupt bytes can
ask for gigabytes. Under the limit that is a ``MemoryError``, which the codec
reports as a ``CodecError``, as in a worker run with ``--worker-memory-bytes``.

Profiles: ``ci`` (default: a few dozen examples per test, seconds in all) and
``long``::

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/python/test_codec_properties.py
"""

from __future__ import annotations

import binascii
import contextlib
import functools
import gc
import operator
import os
import resource
import socket
import struct
import sys
import threading
from collections.abc import Iterator

import cloudpickle
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from mystic_native import WorkerLink
from mystic_wire import (
    CHUNK_MAGIC,
    CLOSE_REQUEST,
    DIGEST_BYTES,
    ERROR,
    FUNCTION_MAGIC,
    KINDS,
    MISS_MAGIC,
    NEXT_REQUEST,
    OK,
    RAISED,
    REQUEST_MAGIC,
    RESPONSE_MAGIC,
    STREAM_MAGIC,
    CodecError,
    Function,
    Request,
    Response,
    attach,
    decode_chunk,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    encode_response_parts,
    strip_kept,
)
from worker_shim import _executor, _loop

# Functions and classes of this module travel by value, as the client
# arranges for a module the workers cannot import (distribute_challenge._by_value).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=4_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
# The suite's 120 s per test is for the ci profile.
pytestmark = pytest.mark.timeout(120 if PROFILE == "ci" else 3600)

HEADROOM = 512 << 20


@contextlib.contextmanager
def memory_headroom(extra: int = HEADROOM) -> Iterator[None]:
    """Lets this process map at most ``extra`` more bytes inside the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    limit = kib * 1024 + extra
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# Values -----------------------------------------------------------------------

text = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)  # surrogates too
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(1 << 200), max_value=1 << 200)
    | st.floats(allow_nan=False)
    | st.complex_numbers(allow_nan=False)
    | st.decimals(allow_nan=False)
    | st.fractions()
    | text
    | st.binary(max_size=64)
    | st.datetimes()
    | st.uuids()
)
# Larger than the pickler's frame: written as separate pieces (see _Pieces).
big_bytes = st.integers(1 << 16, 1 << 18).map(lambda n: (b"0123456789abcdef" * (n // 16 + 1))[:n])
values = st.recursive(
    scalars | big_bytes,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(scalars, children, max_size=4)
        | st.frozensets(scalars, max_size=4)
        | st.builds(bytearray, st.binary(max_size=32))
    ),
    max_leaves=20,
)
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
depmodule_specs = st.lists(st.tuples(text, st.lists(text, max_size=3).map(tuple)), max_size=3).map(
    tuple
)


def spread(*args, **kwargs):
    """Its arguments as a list: an iterable result, which can stream."""
    return [*args, *kwargs.values()]


def add3(a, b, c):
    return a + b + c


def _closure(offset):
    return lambda x: x + offset


# (function, probe arguments, expected result of the probe)
FUNCTIONS = [
    (add3, (1, 2, 3), 6),
    (len, ("abcd",), 4),
    (operator.mul, (6, 7), 42),
    (functools.partial(add3, 10), (1, 2), 13),
    (_closure(5), (1,), 6),
    (spread, (1, 2), [1, 2]),
]
functions = st.sampled_from(FUNCTIONS)


class Custom(Exception):
    def __init__(self, message, code):
        super().__init__(message, code)
        self.code = code


builtin_exceptions = st.one_of(
    st.builds(ValueError, text),
    st.builds(KeyError, scalars),
    st.builds(RuntimeError, text, st.integers()),
    st.builds(OSError, st.integers(0, 200), text),
    st.builds(SystemExit, st.integers(0, 255)),
)
# Custom travels by value (this module is not importable in a worker).
exceptions = builtin_exceptions | st.builds(Custom, text, st.integers())


@st.composite
def responses(draw, classes_by_value: bool = True) -> tuple[str, object, str, str]:
    kind = draw(st.sampled_from(KINDS))
    raised = exceptions if classes_by_value else builtin_exceptions
    value = {OK: values, RAISED: raised, ERROR: text}[kind]
    return kind, draw(value), draw(text), draw(text)


@st.composite
def request_payloads(draw) -> bytes:
    function, _, _ = draw(functions)
    args = tuple(draw(st.lists(values, max_size=3)))
    kwargs = draw(st.dictionaries(identifiers, values, max_size=3))
    return encode_request(function, args, kwargs, draw(depmodule_specs))


@st.composite
def response_payloads(draw) -> bytes:
    """Responses to corrupt: no class by value. Unpickling a class by value
    updates the live class of the same identity (cloudpickle keeps dynamic
    classes unique per process), so a corrupt one would plant garbage
    methods in this process's ``Custom``."""
    return encode_response(*draw(responses(classes_by_value=False)))


# Round trips ------------------------------------------------------------------


@given(
    functions,
    st.lists(values, max_size=4),
    st.dictionaries(identifiers, values, max_size=4),
    depmodule_specs,
)
def test_any_request_round_trips(function_probe, args, kwargs, depmodules):
    function, probe, expected = function_probe
    payload = encode_request(function, tuple(args), kwargs, depmodules)
    assert payload.startswith(FUNCTION_MAGIC)
    request = decode_request(payload)
    assert request.args == tuple(args)
    assert request.kwargs == kwargs
    assert request.depmodules == depmodules
    assert request.function(*probe) == expected


@given(responses())
def test_any_response_round_trips(response):
    kind, value, stdout, stderr = response
    payload = encode_response(kind, value, stdout, stderr)
    assert b"".join(encode_response_parts(kind, value, stdout, stderr)) == payload
    decoded = decode_response(payload)
    assert (decoded.kind, decoded.stdout, decoded.stderr) == (kind, stdout, stderr)
    if kind == RAISED:
        assert type(decoded.value) is type(value)
        assert decoded.value.args == value.args
        assert getattr(decoded.value, "code", None) == getattr(value, "code", None)
    else:
        assert decoded.value == value


# Bad input --------------------------------------------------------------------


def _decodes_cleanly(decode, data: bytes) -> Request | Response | None:
    """Decodes under the memory limit: a well-formed record or CodecError,
    nothing else (any other exception fails the test)."""
    with memory_headroom():
        try:
            decoded = decode(data)
        except CodecError as exc:
            cause = exc.__cause__
            event(f"CodecError from {type(cause).__name__}" if cause else "CodecError")
            return None
    event("decoded")
    if decode is decode_request:
        assert isinstance(decoded, Request) and callable(decoded.function)
        assert isinstance(decoded.args, tuple) and isinstance(decoded.kwargs, dict)
    else:
        assert isinstance(decoded, Response) and decoded.kind in KINDS
        assert isinstance(decoded.stdout, str) and isinstance(decoded.stderr, str)
    return decoded


PAYLOADS = [(decode_request, request_payloads()), (decode_response, response_payloads())]
IDS = ["request", "response"]


@pytest.mark.parametrize(("decode", "payloads"), PAYLOADS, ids=IDS)
@given(data=st.data())
def test_every_truncation_is_a_codec_error(decode, payloads, data):
    payload = data.draw(payloads)
    end = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(CodecError):
        decode(payload[:end])


@st.composite
def corruptions(draw, payloads) -> bytes:
    """A payload with 1 to 8 bytes replaced, inserted or deleted after its magic."""
    payload = bytearray(draw(payloads))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(4, len(payload)))
        edit = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.integers(0, 255))
        if edit == "insert" or position == len(payload):
            payload.insert(position, byte)
        elif edit == "replace":
            payload[position] = byte
        else:
            del payload[position]
    return bytes(payload)


@pytest.mark.parametrize(("decode", "payloads"), PAYLOADS, ids=IDS)
@given(data=st.data())
def test_corrupt_payloads_decode_or_raise_codec_error(decode, payloads, data):
    _decodes_cleanly(decode, data.draw(corruptions(payloads)))


@pytest.mark.parametrize(
    ("decode", "magic"),
    [(decode_request, REQUEST_MAGIC), (decode_response, RESPONSE_MAGIC)],
    ids=IDS,
)
@given(garbage=st.binary(max_size=200))
def test_garbage_decodes_or_raises_codec_error(decode, magic, garbage):
    _decodes_cleanly(decode, magic + garbage)
    if not garbage.startswith((magic, FUNCTION_MAGIC)):
        with pytest.raises(CodecError, match="does not start with"):
            decode(garbage)


def test_a_huge_memo_index_is_a_codec_error_under_a_memory_limit():
    # PROTO 5, NONE, LONG_BINPUT 2**31 - 1, STOP: the memo would need 32 GiB.
    bomb = b"\x80\x05Nr" + struct.pack("<I", (1 << 31) - 1) + b"."
    digest = bytes(DIGEST_BYTES)
    data = attach(Function(digest, bomb), REQUEST_MAGIC + digest)
    with memory_headroom(), pytest.raises(CodecError, match="MemoryError"):
        decode_request(data)


# The worker's decoders --------------------------------------------------------


@st.composite
def request_bytes(draw) -> bytes:
    """What a worker may be handed: a valid call, a corrupt one, or garbage;
    any of them sent to stream its items; or a request for the next chunk or
    to close (with or without a call streaming)."""
    call = st.one_of(
        request_payloads(),
        corruptions(request_payloads()),
        st.binary(max_size=64).map(lambda garbage: REQUEST_MAGIC + garbage),
        st.binary(max_size=64),
    )
    return draw(
        st.one_of(
            call,
            call.map(lambda request: STREAM_MAGIC + request),
            st.sampled_from([NEXT_REQUEST, CLOSE_REQUEST]),
        )
    )


@given(request_bytes())
def test_execute_answers_any_request_bytes(payload):
    with memory_headroom():
        pieces, segment = _executor.execute(memoryview(payload))
    assert segment is None
    _assert_an_answer(bytes(strip_kept(b"".join(pieces))[1]))


def _assert_an_answer(answer: bytes) -> None:
    """A response, a chunk of items, or a miss: a call by digest of a
    function the worker lacks."""
    if answer.startswith(MISS_MAGIC):
        assert len(answer) == len(MISS_MAGIC) + DIGEST_BYTES
    elif answer.startswith(CHUNK_MAGIC):
        assert isinstance(decode_chunk(answer).items, list)
    else:
        assert decode_response(answer).kind in KINDS


@st.composite
def request_lines(draw) -> list[bytes]:
    """Input of the pipe loop: base64 lines of request bytes, some lines that
    are not base64, maybe a last line without its newline."""
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 5)) == 0:
            lines.append(draw(st.binary(max_size=20)).replace(b"\n", b"") + b"\n")
        else:
            lines.append(binascii.b2a_base64(draw(request_bytes()), newline=True))
    if draw(st.booleans()):
        lines.append(draw(st.binary(max_size=10)).replace(b"\n", b""))
    return lines


def _is_base64(line: bytes) -> bool:
    try:
        binascii.a2b_base64(line, strict_mode=True)
    except binascii.Error:
        return False
    return True


@given(request_lines())
# The loop stops at a bad line with more than a socket's buffer still to come.
@example([b"not base64!\n", *[binascii.b2a_base64(bytes(300_000), newline=True)] * 3])
def test_the_pipe_loop_answers_valid_lines_and_stops_at_the_first_bad_one(lines):
    gateway, worker = socket.socketpair()
    with gateway, worker:
        # The gateway's side: writes every line, then reads every answer
        # (in a thread, so that neither side waits for the other's buffer).
        def gateway_side() -> None:
            with contextlib.suppress(OSError):
                gateway.sendall(b"".join(lines))
            gateway.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=gateway_side)
        sender.start()
        with memory_headroom():
            link = WorkerLink(os.dup(worker.fileno()), "pipe", 1 << 20)
            status = _loop.serve(link, _executor.execute)
            # A function's exception may hold the loop's frame (and with it
            # the link) in a reference cycle: collect it to close the link.
            del link
            gc.collect()
        # The loop may have stopped reading with lines still to come: no
        # more reading on this end ends the sender's writes (EPIPE). What it
        # left unread goes before the close (a socket closed over unread
        # bytes resets its peer, which would lose the answers).
        worker.shutdown(socket.SHUT_RD)
        sender.join()
        worker.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while worker.recv(1 << 16):
                pass
        worker.close()
        output = b"".join(iter(lambda: gateway.recv(1 << 16), b""))
    good = 0
    for line in lines:
        if not line.endswith(b"\n") or not _is_base64(line[:-1]):
            break
        good += 1
    expected_status = 0 if good == len(lines) or lines[good] == b"" else 1
    assert status == expected_status
    output = output.split(b"\n")
    assert output[0] == b"ready" and output[-1] == b""
    answers = output[1:-1]
    assert len(answers) == good
    for answer in answers:
        _assert_an_answer(bytes(strip_kept(binascii.a2b_base64(answer, strict_mode=True))[1]))
