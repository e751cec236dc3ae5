"""The worker's shared-memory layout matches the Rust one, byte for byte.

Both languages check ``tests/vectors/shm_layout.txt``; this is the Python
side. Also drives ``worker_shim._shm`` rings over an anonymous mapping:
frames stream through a ring smaller than the payload, and corrupt counters
are errors.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

import pytest

from worker_shim import _shm

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "shm_layout.txt"


def vectors() -> dict[str, bytes]:
    entries = {}
    for line in VECTORS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, hex_bytes = line.split(" ", 1)
            entries[name] = bytes.fromhex(hex_bytes)
    return entries


def test_vectors_file_is_complete():
    assert len(vectors()) >= 8


@pytest.mark.parametrize("name", [n for n in vectors() if n.startswith("frame_header_")])
def test_frame_headers_match(name):
    length = int(name.removeprefix("frame_header_"))
    expected = vectors()[name]
    assert _shm.encode_frame_header(length) == expected
    assert _shm.decode_frame_header(expected) == length


@pytest.mark.parametrize("name", [n for n in vectors() if n.startswith("segment_header_")])
def test_segment_headers_match(name):
    ring_bytes = int(name.removeprefix("segment_header_"))
    expected = vectors()[name]
    packed = _shm.SEGMENT_HEADER.pack(_shm.SEGMENT_MAGIC, _shm.LAYOUT_VERSION, 4096, ring_bytes)
    assert packed == expected


def test_whole_frame_matches():
    payload = b"hello"
    frame = _shm.encode_frame_header(len(payload)) + payload + bytes(_shm.padding(len(payload)))
    assert frame == vectors()["frame_hello"]


@pytest.mark.parametrize(
    "bad",
    [
        b"XCF1" + bytes(12),
        b"MCF1\x01\x00\x00\x00" + bytes(8),
        b"MCF1",
        b"MCF1" + bytes(4) + b"\xff" * 8,
    ],
)
def test_bad_frame_headers_are_errors(bad):
    with pytest.raises(_shm.ShmProtocolError):
        _shm.decode_frame_header(bad)


class _LoopbackBell:
    """A doorbell for one process: waiting means "let the other side run"."""

    def __init__(self, on_wait):
        self.on_wait = on_wait

    def ring(self):
        pass

    def wait(self):
        self.on_wait()
        return True


def _rings(capacity: int):
    buffer = mmap.mmap(-1, 4096 + 2 * capacity)
    requests = _shm.Ring(buffer, _shm.REQUEST_CONTROL, 4096, capacity)
    responses = _shm.Ring(buffer, _shm.RESPONSE_CONTROL, 4096 + capacity, capacity)
    return buffer, requests, responses


def test_a_response_larger_than_the_ring_streams_through_it():
    buffer, requests, responses = _rings(64)
    gateway_side = _shm.Consumer(responses)
    received = bytearray()

    def drain():
        chunk = bytearray(gateway_side.available())
        gateway_side.read_into(memoryview(chunk))
        received.extend(chunk)

    bell = _LoopbackBell(drain)
    channel = _shm.ShmChannel(_shm.Consumer(requests), _shm.Producer(responses), bell)
    payload = bytes(range(256)) * 5
    channel.send([payload[:100], memoryview(payload)[100:]])
    drain()
    length = _shm.decode_frame_header(received[:16])
    assert length == len(payload)
    assert bytes(received[16 : 16 + length]) == payload
    assert len(received) == 16 + length + _shm.padding(length)


def test_a_request_is_read_in_place_when_it_fits():
    buffer, requests, responses = _rings(4096)
    gateway_side = _shm.Producer(requests)
    payload = b"MCQ2 some call"
    frame = _shm.encode_frame_header(len(payload)) + payload + bytes(_shm.padding(len(payload)))
    assert gateway_side.write(memoryview(frame)) == len(frame)
    bell = _LoopbackBell(lambda: None)
    channel = _shm.ShmChannel(_shm.Consumer(requests), _shm.Producer(responses), bell)
    view, in_ring = channel.receive()
    assert bytes(view) == payload
    # The whole frame, header included, stays in the ring until released.
    assert in_ring == len(frame)
    view.release()
    channel.release(in_ring)
    assert _shm.Consumer(requests).available() == 0


def test_corrupt_counters_are_errors():
    buffer, requests, _ = _rings(64)
    consumer = _shm.Consumer(requests)
    struct.pack_into("<Q", buffer, _shm.REQUEST_CONTROL, 10_000)
    with pytest.raises(_shm.ShmProtocolError):
        consumer.available()
