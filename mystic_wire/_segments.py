"""Large payloads through shared memory, for a caller on the gateway's host.

When the client and the gateway share a host (the client reached the
gateway's segment socket, ``_records.py``), a call's pickle and its large
buffers travel in a *segment*: a sealed memfd that the client writes and
hands to the gateway, which hands it to the worker with the call; only a
small header crosses gRPC. A result comes back the same way, in a segment
the worker writes and seals. Pickles are protocol 5: buffers of at least
the caller's threshold (numpy arrays, ``memoryview``, anything exporting
``PickleBuffer``) travel *out of band*, each at its own place in the
segment, and are handed to the unpickler in place: a numpy array argument
is a view over the worker's mapping of the segment, a numpy result a view
over the client's. ``bytes`` and ``bytearray`` travel in the pickle, and
are copied out of it once, as unpickling always does.

Formats (little endian; defined in ``src/wire/segmented.rs``, read and
written here through the extension ``mystic_native``)::

    call     = b"MCQ3" + digest (32 bytes) + session (16 bytes) + handle (u64)
               + result threshold (u64) + body
    response = b"MCR2" + handle (u64) + body
    body     = pickle length (u64) + buffer count (u32)
               + (offset u64, length u64, source u64) per buffer
               + the pickle itself when the handle is 0 (no segment, no buffers)

A buffer's source is 0 (this segment) or, in a response, 1: the call's own
segment, which the client still holds. A result that is (a contiguous part
of) an argument the function did not write to is not copied: it is named
where it already lies (``Borrowed``).

A call names the client's *session* with the gateway and the *handle* of
its segment there (0: none, the pickle is inline); a result threshold of 0
keeps the result inline. A response's handle is 0 from the worker; the
gateway sets it to the result segment's handle in the caller's session.
In a segment the pickle starts at offset 0 and each buffer at a 64-byte
aligned offset after it.

Segments are sealed before they are handed on (no write, no resize, no
more seals): nothing can change a segment once it is sent, so the worker
cannot touch its arguments' or its own result's bytes after the fact, nor
truncate a segment under a reader. Readers map them privately
(copy-on-write): a function may write to an argument array as it could to
an inline one; its writes stay its own.
"""

from __future__ import annotations

import fcntl
import functools
import mmap
import os
import pickle
import struct
import sys
from typing import Any, NamedTuple

import mystic_native

from ._codec import (
    Buffer,
    Call,
    Response,
    call_from_record,
    dump_pieces,
    response_from_record,
)
from ._exceptions import CodecError

# The records, from the extension.
RESPONSE_MAGIC = mystic_native.SEGMENT_RESPONSE_MAGIC
ALIGNMENT = mystic_native.ALIGNMENT
# Where a buffer lies: in this segment, or in the call's.
HERE, IN_CALL = mystic_native.SOURCE_HERE, mystic_native.SOURCE_IN_CALL
call_header = mystic_native.call_header
response_header = mystic_native.response_header

SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_WRITE_CHUNK = 1 << 30


class Layout(NamedTuple):
    """Where a pickle and its out-of-band buffers lie in a segment."""

    pickle_bytes: int
    buffers: tuple[tuple[int, int, int], ...]
    """(offset, length, source) of each buffer, in the order pickled."""

    @property
    def size(self) -> int:
        """The bytes this segment holds (what lies in the call's excluded)."""
        ends = [offset + length for offset, length, source in self.buffers if source == HERE]
        return max([self.pickle_bytes, *ends])


class Pickled(NamedTuple):
    """A record pickled with its large buffers out of band."""

    pieces: list[Buffer]
    buffers: list[pickle.PickleBuffer]

    @property
    def pickle_bytes(self) -> int:
        return sum(memoryview(piece).nbytes for piece in self.pieces)

    def needs_segment(self, threshold: int) -> bool:
        """Whether it should travel in a segment: it has out-of-band buffers,
        or its pickle alone reaches ``threshold``."""
        return bool(self.buffers) or self.pickle_bytes >= threshold


class SegmentedCall(NamedTuple):
    """A decoded ``MCQ3`` call: what its header names, its layout, and what
    follows (its pickle, when it has no segment)."""

    session: bytes
    handle: int
    result_threshold: int
    layout: Layout
    inline: memoryview


def dump(record: Any, threshold: int) -> Pickled:
    """Pickles ``record``, buffers of ``threshold`` bytes or more out of band."""
    buffers: list[pickle.PickleBuffer] = []
    pieces = dump_pieces(b"", record, buffers, threshold)
    return Pickled(pieces, buffers)


def write_segment(pickled: Pickled, borrowed: Borrowed | None = None) -> tuple[int, Layout]:
    """A new sealed memfd holding ``pickled``; its descriptor (the caller's
    to close) and where everything lies in it. Buffers that ``borrowed``
    finds in the call's segment, unchanged, are named there instead."""
    offset = pickled.pickle_bytes
    places = []
    for buffer in pickled.buffers:
        length = buffer.raw().nbytes
        found = borrowed.find(buffer) if borrowed is not None else None
        if found is not None:
            places.append((found, length, IN_CALL))
            continue
        offset = _aligned(offset)
        places.append((offset, length, HERE))
        offset += length
    layout = Layout(pickled.pickle_bytes, tuple(places))
    fd = os.memfd_create("mystic-segment", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.fchmod(fd, 0o600)  # it has no name; /proc/PID/fd still checks the mode
        os.ftruncate(fd, layout.size)
        position = 0
        for piece in pickled.pieces:
            position = _write(fd, memoryview(piece).cast("B"), position)
        for buffer, (place, _length, source) in zip(pickled.buffers, places, strict=True):
            if source == HERE:
                _write(fd, buffer.raw(), place)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd, layout


def encode_body(layout: Layout) -> bytes:
    return mystic_native.encode_body(layout.pickle_bytes, layout.buffers)


def inline_body(pieces: list[Buffer]) -> list[Buffer]:
    """The body of a call without a segment: its pickle follows the header."""
    length = sum(memoryview(piece).nbytes for piece in pieces)
    return [mystic_native.encode_body(length, ()), *pieces]


def inline_call(digest: bytes, pickled: Pickled) -> bytes:
    """A plain call (``MCQ2``) of the function with ``digest``, for a
    record that needs no shared memory (its pieces hold no buffers)."""
    return b"".join((mystic_native.by_digest_header(digest), *pickled.pieces))


def is_segment_response(payload: Buffer) -> bool:
    """Whether a response's result is in a segment (``MCR2``)."""
    return payload[: len(RESPONSE_MAGIC)] == RESPONSE_MAGIC


def parse_call(view: memoryview) -> SegmentedCall:
    """Decodes an ``MCQ3`` call (magic and digest included)."""
    session, handle, threshold, pickle_bytes, buffers, inline = mystic_native.parse_call(view)
    return SegmentedCall(session, handle, threshold, Layout(pickle_bytes, buffers), inline)


def parse_response(view: memoryview) -> tuple[int, Layout]:
    """Decodes an ``MCR2`` response header: its handle and its layout."""
    handle, pickle_bytes, buffers = mystic_native.parse_response(view)
    return handle, Layout(pickle_bytes, buffers)


def map_segment(fd: int, layout: Layout | None = None) -> mmap.mmap:
    """Maps a sealed segment privately (copy-on-write), checking that it is
    sealed and holds ``layout``. The descriptor may be closed afterwards."""
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError as exc:
        raise CodecError(f"the shared-memory segment is not a memfd: {exc}") from exc
    if seals & SEALS != SEALS:
        raise CodecError("the shared-memory segment is not sealed")
    size = os.fstat(fd).st_size
    needed = 1 if layout is None else layout.size
    if size < needed or size == 0:
        raise CodecError(f"the shared-memory segment holds {size} bytes, not {needed}")
    return mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)


def load(
    mapping: mmap.mmap | memoryview,
    layout: Layout,
    what: str = "payload",
    call: mmap.mmap | None = None,
) -> Any:
    """Unpickles what a segment holds, its buffers in place (those in the
    call's segment over ``call``, its mapping)."""
    view = memoryview(mapping)
    sources = {HERE: view}
    if call is not None:
        sources[IN_CALL] = memoryview(call)
    buffers = []
    for offset, length, source in layout.buffers:
        where = sources.get(source)
        if where is None or offset + length > where.nbytes:
            raise CodecError(f"a buffer of the {what} lies outside its segment")
        buffers.append(where[offset : offset + length])
    try:
        return pickle.loads(view[: layout.pickle_bytes], buffers=buffers)
    except Exception as exc:
        raise CodecError(
            f"the {what} could not be unpickled: {type(exc).__name__}: {exc}; "
            "if a module is missing, install it where the payload is decoded"
        ) from exc
    finally:
        view.release()


def load_call(header: SegmentedCall, fd: int | None) -> tuple[Call, mmap.mmap | None]:
    """The call an ``MCQ3`` header and its segment (``fd``, when it has a
    handle) hold, and the mapping of that segment."""
    if fd is None:
        record = load(header.inline, Layout(header.layout.pickle_bytes, ()), "request")
        return call_from_record(record), None
    mapping = map_segment(fd, header.layout)
    return call_from_record(load(mapping, header.layout, "request")), mapping


def load_response(fd: int, layout: Layout, call_fd: int | None = None) -> Response:
    """The response a result segment holds (``call_fd``: the call's own
    segment, for buffers that lie there)."""
    call = None
    if call_fd is not None and any(source == IN_CALL for *_place, source in layout.buffers):
        call = map_segment(call_fd)
    return response_from_record(load(map_segment(fd, layout), layout, "response", call))


class Borrowed:
    """Finds result buffers that lie, unchanged, in the call's segment: its
    mapping in the worker is private, so a page the function wrote to is the
    worker's own copy (no longer the file's page, says ``/proc/self/pagemap``)
    and must travel; a page it only read is still the segment's. Where this
    process cannot read its own pagemap (a worker that is not dumpable, run
    by a user other than root), the bytes are compared with the segment's
    instead, read back through a descriptor of it kept for the call (no
    second mapping: it would count twice against the address-space limit)."""

    def __init__(self, mapping: mmap.mmap, fd: int) -> None:
        # Held, so that nothing else is mapped where it lies meanwhile.
        self._mapping = mapping
        self._start = _address(memoryview(mapping))
        self._size = len(mapping)
        self._fd = None if _pagemap_readable() else os.dup(fd)

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def find(self, buffer: pickle.PickleBuffer) -> int | None:
        """``buffer``'s offset in the call's segment, if it lies there unchanged."""
        raw = buffer.raw()
        address = _address(raw)
        if self._start is None or address is None or raw.nbytes == 0:
            return None
        if not self._start <= address <= self._start + self._size - raw.nbytes:
            return None
        offset = address - self._start
        if self._fd is not None:
            unchanged = _same_bytes(address, self._fd, offset, raw.nbytes)
        else:
            unchanged = not _written(address, raw.nbytes)
        return offset if unchanged else None


_PAGE = mmap.PAGESIZE
_PRESENT, _SWAPPED, _FILE = 1 << 63, 1 << 62, 1 << 61


def _address(view: memoryview) -> int | None:
    """Where a contiguous buffer's bytes start in this process."""
    import ctypes

    try:
        if not view.readonly:
            return ctypes.addressof(ctypes.c_char.from_buffer(view))
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            return int(numpy.frombuffer(view, dtype=numpy.uint8).ctypes.data)
    except (TypeError, ValueError):
        pass
    return None


@functools.cache
def _pagemap_readable() -> bool:
    try:
        with open("/proc/self/pagemap", "rb", buffering=0):
            return True
    except OSError:
        return False


_COMPARE_CHUNK = 1 << 20


def _same_bytes(address: int, fd: int, offset: int, length: int) -> bool:
    """Whether ``length`` bytes at ``address`` equal those of the file
    ``fd`` at ``offset`` (read back a chunk at a time)."""
    import ctypes

    memcmp = ctypes.CDLL(None).memcmp
    memcmp.restype = ctypes.c_int
    chunk = bytearray(min(length, _COMPARE_CHUNK))
    chunk_address = ctypes.addressof(ctypes.c_char.from_buffer(chunk))
    done = 0
    while done < length:
        want = min(len(chunk), length - done)
        if os.preadv(fd, [memoryview(chunk)[:want]], offset + done) != want:
            return False
        if memcmp(
            ctypes.c_void_p(address + done), ctypes.c_void_p(chunk_address), ctypes.c_size_t(want)
        ):
            return False
        done += want
    return True


def _written(address: int, length: int) -> bool:
    """Whether any page of this private file mapping was written to (or
    that cannot be told): a written page is anonymous, present or swapped."""
    first, last = address // _PAGE, (address + length - 1) // _PAGE
    size = (last - first + 1) * 8
    try:
        with open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
            entries = os.pread(pagemap.fileno(), size, first * 8)
    except OSError:
        return True
    if len(entries) != size:
        return True
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        flags = numpy.frombuffer(entries, dtype="<u8")
        private = ((flags & _PRESENT) != 0) & ((flags & _FILE) == 0)
        return bool(private.any() or ((flags & _SWAPPED) != 0).any())
    for (flags,) in struct.iter_unpack("<Q", entries):
        if flags & _SWAPPED or (flags & _PRESENT and not flags & _FILE):
            return True
    return False


def _aligned(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT


def _write(fd: int, data: memoryview, position: int) -> int:
    """Writes all of ``data`` at ``position``; the position after it."""
    done = 0
    while done < data.nbytes:
        done += os.pwrite(fd, data[done : done + _WRITE_CHUNK], position + done)
    return position + done
