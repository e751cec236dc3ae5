"""The shared-memory transport, worker side.

The gateway creates, per worker, a segment holding two single-producer
single-consumer byte rings (requests: gateway to worker; responses: worker to
gateway) and a Unix socket pair used only as a doorbell, and starts the worker
with the segment (a sealed memfd: it has no name, and no process can change
its size) as its stdout and its end of the doorbell as its stdin. This module
maps the segment with ``mmap``, reads and writes frames (their headers
through the extension ``mystic_native``), and waits on the doorbell when a
ring is empty or full.
:func:`attach` returns the :class:`ShmChannel` that ``_loop.serve`` drives.
The layout is defined in ``src/transport/shm/segment.rs`` and
``src/wire/frame.rs`` and pinned for both languages by ``tests/vectors/``:

- segment header: ``MYSTSHM1``, version (u32 LE) 1, data offset (u32 LE),
  ring bytes (u64 LE);
- ring control blocks at 64 (requests) and 192 (responses): ``head`` (u64,
  written by the producer) then ``tail`` 64 bytes further (u64, written by the
  consumer), both free-running byte counts;
- frames: a 16-byte header (``MCF1``, flags u32 = 0, payload length u64, all
  little endian), the payload, zero padding to a multiple of 16.

Counters are read and written as aligned 8-byte words through ``ctypes``,
which on x86-64 are single atomic loads and stores, and x86-64 keeps stores
in order (a store to ``head`` is seen after the data written before it). The
transport therefore runs on x86-64 only; ``attach`` refuses other machines.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import socket
import struct

import mystic_native
from mystic_native import FRAME_HEADER_BYTES, encode_frame_header
from mystic_wire import Buffer, CodecError

from ._channel import GatewayGone, ProtocolError

SEGMENT_MAGIC = b"MYSTSHM1"
LAYOUT_VERSION = 1
SEGMENT_HEADER = struct.Struct("<8sIIQ")
REQUEST_CONTROL = 64
RESPONSE_CONTROL = 192
TAIL_OFFSET = 64
FRAME_ALIGN = FRAME_HEADER_BYTES
READY = b"ready\n"
BELL = b"!"
MASK64 = (1 << 64) - 1

# Receive buffers up to this size are kept between calls: fresh memory costs
# page faults on every call, and large payloads tend to come again.
KEEP_BUFFER_BYTES = 256 << 20
# The start of each ring, which the gateway faulted in: mapped at once here
# too (the rest as traffic first reaches it). Mirrors segment.rs.
PREFAULT_BYTES = 64 << 10
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux 5.14
# Responses up to this size are joined and written to the ring in one go.
SMALL_FRAME_BYTES = 64 << 10
ZEROS = bytes(FRAME_ALIGN)


class ShmProtocolError(ProtocolError):
    """The segment or a frame is not what the layout says."""


class AttachError(Exception):
    """The worker cannot use the shared-memory transport; the message says
    why and what to do, ``status`` is the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def padding(length: int) -> int:
    """Zero bytes after a payload of ``length`` bytes."""
    return -length % FRAME_ALIGN


def decode_frame_header(data: Buffer) -> int:
    """Checks a 16-byte frame header; returns the payload length."""
    try:
        return mystic_native.decode_frame_header(data)
    except CodecError as exc:
        raise ShmProtocolError(str(exc)) from exc


class Ring:
    """One ring's counters and data area inside the mapped segment."""

    def __init__(self, buffer: mmap.mmap, control: int, data: int, capacity: int) -> None:
        self._head = ctypes.c_uint64.from_buffer(buffer, control)
        self._tail = ctypes.c_uint64.from_buffer(buffer, control + TAIL_OFFSET)
        self.data = memoryview(buffer)[data : data + capacity]
        self.capacity = capacity

    def release(self) -> None:
        """Drops the views into the mapping so that it can be closed."""
        self.data.release()
        del self._head, self._tail


class Consumer:
    """The reading end: the worker's end of the request ring."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.tail = ring._tail.value

    def available(self) -> int:
        head = self.ring._head.value
        filled = (head - self.tail) & MASK64
        if filled > self.ring.capacity:
            raise ShmProtocolError(f"corrupt request ring: head {head}, tail {self.tail}")
        return filled

    def read_into(self, destination: memoryview) -> int:
        """Copies up to ``len(destination)`` bytes out and releases them."""
        count = min(len(destination), self.available())
        start = self.tail % self.ring.capacity
        first = min(count, self.ring.capacity - start)
        destination[:first] = self.ring.data[start : start + first]
        destination[first:count] = self.ring.data[: count - first]
        self.skip(count)
        return count

    def skip(self, count: int) -> None:
        """Releases ``count`` read bytes to the producer."""
        self.tail = (self.tail + count) & MASK64
        self.ring._tail.value = self.tail


class Producer:
    """The writing end: the worker's end of the response ring."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.head = ring._head.value

    def free(self) -> int:
        tail = self.ring._tail.value
        used = (self.head - tail) & MASK64
        if used > self.ring.capacity:
            raise ShmProtocolError(f"corrupt response ring: head {self.head}, tail {tail}")
        return self.ring.capacity - used

    def write(self, source: memoryview) -> int:
        """Copies as much of ``source`` as fits and publishes it."""
        count = min(len(source), self.free())
        start = self.head % self.ring.capacity
        first = min(count, self.ring.capacity - start)
        self.ring.data[start : start + first] = source[:first]
        self.ring.data[: count - first] = source[first:count]
        self.head = (self.head + count) & MASK64
        self.ring._head.value = self.head
        return count


class Doorbell:
    """The wake-up socket: a byte means "look at the rings again"; EOF means
    the gateway is gone."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        if self.sock.family != socket.AF_UNIX:
            self.sock.detach()
            raise ShmProtocolError("the doorbell (stdin) is not a Unix socket")

    def ring(self) -> None:
        self.sock.sendall(BELL)

    def wait(self) -> bool:
        """Blocks until the gateway rings; False once it has gone."""
        return bool(self.sock.recv(64))


class Segment:
    """The worker's mapping of the segment file ``fd`` (closed once mapped)."""

    def __init__(self, fd: int) -> None:
        try:
            size = os.fstat(fd).st_size
            if size < SEGMENT_HEADER.size:
                raise ShmProtocolError(f"the segment is too small ({size} bytes)")
            self.buffer = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)
        magic, version, data_offset, ring_bytes = SEGMENT_HEADER.unpack_from(self.buffer, 0)
        if magic != SEGMENT_MAGIC or version != LAYOUT_VERSION:
            raise ShmProtocolError(f"the segment has magic {magic!r} version {version}")
        if ring_bytes <= 0 or data_offset < 320 or data_offset + 2 * ring_bytes > size:
            raise ShmProtocolError(f"the segment's rings of {ring_bytes} bytes do not fit")
        for start in (data_offset, data_offset + ring_bytes):
            self._map_early(start, min(ring_bytes, PREFAULT_BYTES))
        self.requests = Consumer(Ring(self.buffer, REQUEST_CONTROL, data_offset, ring_bytes))
        self.responses = Producer(
            Ring(self.buffer, RESPONSE_CONTROL, data_offset + ring_bytes, ring_bytes)
        )

    def _map_early(self, start: int, length: int) -> None:
        """Maps pages the gateway has faulted in, so that the first calls
        take no page fault here either; skipped where the kernel cannot."""
        try:
            self.buffer.madvise(MADV_POPULATE_WRITE, start, length)
        except (OSError, ValueError):
            pass


class ShmChannel:
    """Frames in and out over one segment and its doorbell."""

    def __init__(self, requests: Consumer, responses: Producer, bell: Doorbell) -> None:
        self.requests = requests
        self.responses = responses
        self.bell = bell
        self._buffer = bytearray()
        self._freed = False

    # Bells are rung only when the other side may be waiting for them. A
    # producer rings after every write that published bytes. A producer
    # waits only while part of its frame is still unwritten, so the consumer
    # rings only before it waits itself, and only if it freed space since it
    # last rang: a blocked producer cannot finish its frame, so the consumer
    # is bound to reach that wait. A call that fits the rings therefore costs
    # one bell each way, like a pipe.

    def ready(self) -> None:
        self.bell.sock.sendall(READY)

    def _wait_for_requests(self) -> None:
        if self._freed:
            self._freed = False
            self.bell.ring()
        if not self.bell.wait():
            raise GatewayGone

    def _read_exactly(self, destination: memoryview) -> None:
        filled = 0
        while filled < len(destination):
            count = self.requests.read_into(destination[filled:])
            if count:
                filled += count
                self._freed = True
            else:
                self._wait_for_requests()

    def _skip_exactly(self, count: int) -> None:
        while count:
            step = min(count, self.requests.available())
            if step:
                self.requests.skip(step)
                count -= step
                self._freed = True
            else:
                self._wait_for_requests()

    def receive(self) -> tuple[memoryview, int]:
        """Waits for the next request frame. Returns its payload and how many
        ring bytes to release once the payload is no longer used (0 when the
        payload was copied out). Raises GatewayGone when the gateway is gone."""
        self._freed = False
        requests = self.requests
        # Frames start 16-byte aligned in a ring whose size is a multiple of
        # 16, so a header never wraps; it is written whole, into an empty ring.
        while (available := requests.available()) < FRAME_HEADER_BYTES:
            self._wait_for_requests()
        start = requests.tail % requests.ring.capacity
        length = decode_frame_header(requests.ring.data[start : start + FRAME_HEADER_BYTES])
        frame = FRAME_HEADER_BYTES + length + padding(length)
        # Fast path: the whole frame is already in the ring in one piece, so
        # the payload is read in place, without a copy; the frame is released
        # once the payload is no longer used.
        if available >= frame and start + frame <= requests.ring.capacity:
            body = start + FRAME_HEADER_BYTES
            return requests.ring.data[body : body + length], frame
        requests.skip(FRAME_HEADER_BYTES)
        self._freed = True
        if length > len(self._buffer):
            buffer = bytearray(length)
            if length <= KEEP_BUFFER_BYTES:
                self._buffer = buffer
        else:
            buffer = self._buffer
        payload = memoryview(buffer)[:length]
        self._read_exactly(payload)
        self._skip_exactly(padding(length))
        return payload, 0

    def release(self, count: int) -> None:
        """Frees the ``count`` ring bytes of a request read in place.

        Call it before :meth:`send`. Release does not ring the bell: the
        whole request was in the ring, so the gateway is not waiting for
        space now. Once the response is sent the gateway may start writing
        the next request; space freed after that would come with no bell, and
        a gateway that found the ring full would wait for it forever."""
        if count:
            self.requests.skip(count)

    def send(self, pieces: list[Buffer]) -> None:
        """Streams one response frame, made of ``pieces``, into the response ring."""
        views = [memoryview(piece).cast("B") for piece in pieces]
        length = sum(view.nbytes for view in views)
        parts = [encode_frame_header(length), *views, ZEROS[: padding(length)]]
        if length <= SMALL_FRAME_BYTES:
            # One copy into one buffer costs less than a ring write per piece.
            pending = [memoryview(b"".join(parts))]
        else:
            pending = [memoryview(part) for part in parts]
        while pending:
            wrote = False
            while pending:
                count = self.responses.write(pending[0])
                wrote = wrote or count > 0
                if count < pending[0].nbytes:
                    pending[0] = pending[0][count:]
                    break
                pending.pop(0)
            if wrote:
                self.bell.ring()
            if pending and not self.bell.wait():
                raise GatewayGone


def attach(segment_fd: int, doorbell_fd: int) -> ShmChannel:
    """Maps the segment and takes the doorbell, both given as file
    descriptors (which this takes over). Raises :class:`AttachError`."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise AttachError(
            f"the shm transport needs x86-64, this is {platform.machine()}; "
            "start the gateway with --transport pipe",
            status=2,
        )
    try:
        segment = Segment(segment_fd)
        bell = Doorbell(doorbell_fd)
    except (OSError, ShmProtocolError) as exc:
        hint = ""
        if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
            hint = "; if --worker-memory-bytes is set, it must leave room for 2 x --ring-bytes"
        raise AttachError(f"cannot attach to shared memory: {exc}{hint}", status=1) from exc
    return ShmChannel(segment.requests, segment.responses, bell)
