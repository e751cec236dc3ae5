"""The wire format as Python gets it, through the extension, matches the
gateway's byte for byte.

Both languages check ``tests/vectors/wire_records.txt``: this is the Python
side (``src/wire/vectors.rs`` the Rust one). Each record is built from its
fields with ``mystic_native`` and compared with the file's bytes, and read
back from them; malformed ones raise ``CodecError``. ``mystic_wire`` and
the worker get their layouts from the same functions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import mystic_native
from mystic_wire import CodecError

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "wire_records.txt"


def _hex(text: str) -> bytes:
    return b"" if text == "-" else bytes.fromhex(text)


def vectors() -> list[tuple[str, dict[str, str], bytes]]:
    """Each line's family, fields and bytes."""
    entries = []
    for line in VECTORS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        family, *fields, data = line.split()
        if family == "malformed":
            named = {"of": fields[0]}
        else:
            named = dict(field.split("=", 1) for field in fields)
        entries.append((family, named, _hex(data)))
    return entries


def _layout(fields: dict[str, str]) -> tuple[int, tuple[tuple[int, int, int], ...]]:
    places = [] if fields["buffers"] == "-" else fields["buffers"].split(",")
    buffers = tuple(tuple(int(n) for n in place.split(":")) for place in places)
    return int(fields["pickle"]), buffers


def _request(fields: dict[str, str], call: bytes) -> bytes:
    if "function" not in fields:
        return call
    return mystic_native.attach(_hex(fields["function"]), call)


RECORD_KINDS = {
    "HELLO": mystic_native.RECORD_HELLO,
    "PUT": mystic_native.RECORD_PUT,
    "GET": mystic_native.RECORD_GET,
    "DROP": mystic_native.RECORD_DROP,
}
PARSERS = {
    "request": mystic_native.split_request,
    "host_call": mystic_native.parse_call,
    "host_response": mystic_native.parse_response,
    "record": mystic_native.unpack_record,
}


def check(family: str, fields: dict[str, str], data: bytes) -> None:
    # The bytes as shared memory would hold them: read in place, sliced.
    view = memoryview(bytearray(data))
    if family == "call":
        digest, arguments = _hex(fields["digest"]), _hex(fields["arguments"])
        assert _request(fields, mystic_native.by_digest_header(digest) + arguments) == data
        split_digest, function, call, segmented = mystic_native.split_request(view)
        assert (split_digest, call, segmented) == (digest, arguments, False)
        assert function == (_hex(fields["function"]) if "function" in fields else None)
    elif family == "host_call":
        digest, session = _hex(fields["digest"]), _hex(fields["session"])
        handle, threshold = int(fields["handle"]), int(fields["threshold"])
        pickle_bytes, buffers = _layout(fields)
        inline = _hex(fields["inline"])
        header = mystic_native.call_header(digest, session, handle, threshold)
        call = header + mystic_native.encode_body(pickle_bytes, buffers) + inline
        assert _request(fields, call) == data
        split_digest, _function, whole, segmented = mystic_native.split_request(view)
        assert (split_digest, whole, segmented) == (digest, call, True)
        parsed = mystic_native.parse_call(whole)
        assert parsed == (session, handle, threshold, pickle_bytes, buffers, inline)
    elif family == "host_response":
        handle, (pickle_bytes, buffers) = int(fields["handle"]), _layout(fields)
        header = mystic_native.response_header(handle)
        assert header + mystic_native.encode_body(pickle_bytes, buffers) == data
        assert mystic_native.parse_response(view) == (handle, pickle_bytes, buffers)
    elif family == "miss":
        assert mystic_native.encode_miss(_hex(fields["digest"])) == data
    elif family == "kept":
        assert mystic_native.KEPT_MAGIC + _hex(fields["answer"]) == data
        assert mystic_native.strip_kept(view) == (True, _hex(fields["answer"]))
    elif family == "response":
        assert mystic_native.RESPONSE_MAGIC + _hex(fields["pickle"]) == data
        assert mystic_native.strip_kept(view) == (False, data)
    elif family == "streamed":
        assert mystic_native.STREAM_MAGIC + _hex(fields["request"]) == data
    elif family == "chunk":
        assert mystic_native.CHUNK_MAGIC + _hex(fields["pickle"]) == data
    elif family == "next":
        assert mystic_native.NEXT_REQUEST == data
    elif family == "close":
        assert mystic_native.CLOSE_REQUEST == data
    elif family == "record":
        kind = RECORD_KINDS.get(fields["kind"]) or _hex(fields["kind"])
        status = getattr(mystic_native, f"STATUS_{fields['status']}")
        token = _hex(fields["token"]) or bytes(mystic_native.TOKEN_BYTES)
        record = (kind, status, int(fields["handle"]), token)
        assert mystic_native.pack_record(*record) == data
        assert mystic_native.unpack_record(view) == record
    elif family == "malformed":
        with pytest.raises(CodecError):
            PARSERS[fields["of"]](view)
    else:
        raise AssertionError(f"unknown family {family}")


@pytest.mark.parametrize(
    ("family", "fields", "data"),
    vectors(),
    ids=[f"{family}-{n}" for n, (family, _fields, _data) in enumerate(vectors())],
)
def test_every_vector_matches_the_extension(family, fields, data):
    check(family, fields, data)


def test_every_family_has_vectors():
    families = {fields.get("of", family) for family, fields, _data in vectors()}
    expected = {"call", "host_call", "host_response", "miss", "kept", "response"}
    expected |= {"streamed", "chunk", "next", "close", "record", "request"}
    assert expected <= families


def test_parts_of_a_buffer_are_views_of_it():
    data = bytearray(next(v for _f, fields, v in vectors() if "function" in fields))
    _digest, function, call, _segmented = mystic_native.split_request(data)
    data[-1] ^= 0xFF
    data[12] ^= 0xFF
    assert call[-1] == data[-1] and function[4] == data[12]
    assert call.obj is data and function.obj is data
