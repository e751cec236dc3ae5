"""Large payloads through shared memory, for a client on the gateway's host
(``mystic_wire/_segments.py``), on both transports: what travels out of band
and arrives in place, the inline fallback, bounds, and what is left behind
when the client, a worker or the gateway is killed mid-call."""

from __future__ import annotations

import os
import pathlib
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from system_state import shm_entries, wait_until

from distribute_challenge import (
    DistributeError,
    PayloadTooLarge,
    ServerUnavailable,
    WorkerCrashed,
    _segment_door,
    compute_this,
)
from distribute_challenge._target import parse_server
from mystic_wire import _segments

MIB = 1 << 20
SEGMENT = "memfd:mystic-segment"


def segment_of(address: int) -> str | None:
    """The name of the mapping of this process that holds ``address``
    (``SEGMENT`` for any call segment)."""
    for line in pathlib.Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(bound, 16) for bound in fields[0].split("-"))
        if start <= address < end:
            name = fields[5] if len(fields) == 6 else ""
            return SEGMENT if SEGMENT in name else name
    return None


def where(value):
    """In the worker: what ``value`` is, and the mapping its bytes lie in."""
    import ctypes

    import numpy

    def address(buffer):
        if isinstance(buffer, numpy.ndarray):
            return buffer.__array_interface__["data"][0]
        view = memoryview(buffer)
        return ctypes.addressof(ctypes.c_char.from_buffer(view)) if not view.readonly else None

    place = address(value)
    return type(value).__name__, None if place is None else segment_of(place)


def echo(value):
    return value


def holders() -> set[int]:
    """Processes holding a shared-memory call segment (by fd or mapping)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if SEGMENT in pathlib.Path(f"/proc/{entry}/maps").read_text():
                found.add(int(entry))
                continue
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if SEGMENT in os.readlink(f"/proc/{entry}/fd/{fd}"):
                    found.add(int(entry))
                    break
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def segment_sockets() -> set[str]:
    """The gateways' segment sockets open on this host (abstract names)."""
    lines = pathlib.Path("/proc/net/unix").read_text().splitlines()[1:]
    return {line.split()[-1] for line in lines if "@mysticchallenge-" in line}


# --- out of band, in place ---------------------------------------------------


ARRAYS = {
    "float64": np.arange(MIB // 4, dtype=np.float64),
    "int8-3d": np.arange(2 * MIB, dtype=np.int8).reshape(128, 128, 128),
    "complex-fortran": np.asfortranarray(np.ones((512, 256), dtype=np.complex128) * (1 + 2j)),
    "bool": np.arange(2 * MIB) % 3 == 0,
    "structured": np.zeros(MIB // 8, dtype=[("x", "<f4"), ("y", "<i4")]),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_numpy_arrays_arrive_as_views_over_a_segment(remote, name):
    array = ARRAYS[name]
    kind, mapping = remote(where)(array).run()
    assert (kind, mapping) == ("ndarray", SEGMENT)
    back = remote(echo)(array).run()
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.flags.f_contiguous == array.flags.f_contiguous
    assert np.array_equal(back, array)
    assert segment_of(back.__array_interface__["data"][0]) == SEGMENT
    back[0] = back[1]  # writable, as an inline result is


def test_a_non_contiguous_array_travels_as_a_contiguous_copy(remote):
    array = np.arange(4 * MIB, dtype=np.int32).reshape(2048, 2048)[::2, ::3]
    assert not array.flags.c_contiguous
    kind, mapping = remote(where)(array).run()
    assert (kind, mapping) == ("ndarray", SEGMENT)
    assert np.array_equal(remote(echo)(array).run(), array)


def test_a_function_may_write_to_its_argument_without_touching_the_callers(remote):
    def bump(a):
        a += 1
        return a

    array = np.zeros(MIB, dtype=np.float64)
    back = remote(bump)(array).run()
    assert back.sum() == MIB
    assert array.sum() == 0


@pytest.mark.parametrize(
    "value",
    [
        os.urandom(3 * MIB),
        bytearray(os.urandom(3 * MIB)),
        memoryview(bytearray(os.urandom(3 * MIB))),
        memoryview(os.urandom(3 * MIB)),
        memoryview(bytearray(4 * MIB)).cast("i", (1024, 1024)),
    ],
    ids=["bytes", "bytearray", "memoryview", "readonly-memoryview", "memoryview-2d"],
)
def test_bytes_bytearray_and_memoryview_keep_their_type(remote, value):
    back = remote(echo)(value).run()
    assert type(back) is type(value)
    assert bytes(back) == bytes(value)
    if isinstance(value, memoryview):
        assert (back.format, back.shape, back.readonly) == (
            value.format,
            value.shape,
            value.readonly,
        )
        kind, mapping = remote(where)(value).run()
        assert kind == "memoryview"
        # A read-only view's address cannot be read (None); a writable one's is.
        assert mapping == (None if value.readonly else SEGMENT)


def test_small_memoryviews_travel_inline_and_keep_their_type(remote):
    value = memoryview(b"abc")
    back = remote(echo)(value).run()
    assert isinstance(back, memoryview) and back.tobytes() == b"abc" and back.readonly


def test_nested_structures_with_several_large_buffers(remote):
    def describe(record):
        return {key: [where(item) for item in items] for key, items in record.items()}

    record = {
        "arrays": [np.ones(MIB), np.zeros((512, 512), dtype=np.int32)],
        "raw": [os.urandom(2 * MIB), memoryview(bytearray(2 * MIB))],
        "small": [np.ones(3), b"tiny"],
    }
    described = remote(describe)(record).run()
    assert described["arrays"] == [("ndarray", SEGMENT)] * 2
    assert described["small"][0][0] == "ndarray" and described["small"][0][1] != SEGMENT
    back = remote(echo)(record).run()
    assert np.array_equal(back["arrays"][1], record["arrays"][1])
    assert back["raw"][0] == record["raw"][0]
    assert bytes(back["raw"][1]) == bytes(record["raw"][1])
    assert back["small"][1] == b"tiny"


def test_results_that_are_views_of_arguments(remote):
    def views(a):
        return a, a[::2], a[: len(a) // 2], a.reshape(-1, 4).T

    array = np.arange(MIB, dtype=np.int64)
    same, strided, head, transposed = remote(views)(array).run()
    assert np.array_equal(same, array)
    assert np.array_equal(strided, array[::2])
    assert np.array_equal(head, array[: MIB // 2])
    assert np.array_equal(transposed, array.reshape(-1, 4).T)


def test_large_results_of_small_calls_come_back_in_a_segment(remote):
    """Small calls are plain inline calls, until the function's results are
    seen to be large: from then on its calls ask for them in shared memory."""

    def make(n):
        import numpy

        return numpy.full(n, 7, dtype=numpy.uint8)

    made = remote(make)
    first = made(4 * MIB).run()
    assert first.shape == (4 * MIB,) and int(first[-1]) == 7
    assert segment_of(first.__array_interface__["data"][0]) != SEGMENT
    for n in (4 * MIB, 10):
        back = made(n).run()
        assert back.shape == (n,) and int(back[-1]) == 7
        inline = n < MIB
        assert (segment_of(back.__array_interface__["data"][0]) == SEGMENT) is not inline


def test_below_the_threshold_everything_is_inline(remote):
    array = np.ones(1000)
    kind, mapping = remote(where, shared_memory_threshold=None)(np.ones(MIB)).run()
    assert mapping != SEGMENT
    kind, mapping = remote(where)(array).run()
    assert kind == "ndarray" and mapping != SEGMENT
    back = remote(echo, shared_memory_threshold=1024)(array).run()
    assert segment_of(back.__array_interface__["data"][0]) == SEGMENT


def test_async_run_uses_shared_memory_too(remote):
    import asyncio

    array = np.arange(MIB, dtype=np.float32)

    async def main():
        return await remote(where)(array).async_run(), await remote(echo)(array).async_run()

    (kind, mapping), back = asyncio.run(main())
    assert mapping == SEGMENT and np.array_equal(back, array)


def test_the_threshold_must_be_a_positive_number_of_bytes():
    for bad in (0, -1, 1.5, True, "1M"):
        with pytest.raises(ValueError, match="shared_memory_threshold"):
            compute_this(shared_memory_threshold=bad)


def segments_held():
    """In the worker: the call segments it has open (descriptors) and maps."""
    import os
    import pathlib

    fds = [
        fd
        for fd in os.listdir("/proc/self/fd")
        if SEGMENT in os.path.realpath(f"/proc/self/fd/{fd}") or _links_to_segment(fd)
    ]
    mapped = {
        line.split()[4]
        for line in pathlib.Path("/proc/self/maps").read_text().splitlines()
        if SEGMENT in line
    }
    return len(fds), len(mapped)


def _links_to_segment(fd):
    import os

    try:
        return SEGMENT in os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False


def test_a_worker_holds_only_the_segment_of_the_call_it_runs(start_gateway):
    """Once a call is over, its worker holds nothing of its segments (no
    descriptor, no mapping): the next call sees its own segment only (its
    mapping, and the descriptor Python's mmap keeps with it)."""
    gateway = start_gateway("--workers", "1")
    remote = compute_this(server=gateway.url)
    remote(echo)(np.ones(MIB)).run()
    assert remote(segments_held)().run() == (0, 0)

    def held_during(array):
        return segments_held()

    assert remote(held_during)(np.ones(MIB)).run() == (1, 1)
    assert remote(segments_held)().run() == (0, 0)


# --- fallback ------------------------------------------------------------------


def test_a_client_that_cannot_reach_the_segment_socket_sends_inline(server, monkeypatch):
    """As a client on another host: the announced socket does not exist for it."""

    def unreachable(cls, name):
        raise _segment_door.DoorError("no such socket here")

    monkeypatch.setattr(_segment_door.Door, "connect", classmethod(unreachable))
    monkeypatch.setattr(_segment_door, "_doors", {})
    remote = compute_this(server=server)
    array = np.arange(2 * MIB, dtype=np.float64)
    kind, mapping = remote(where)(array).run()
    assert kind == "ndarray" and mapping != SEGMENT
    back = remote(echo)(array).run()
    assert np.array_equal(back, array)
    assert segment_of(back.__array_interface__["data"][0]) != SEGMENT


def test_a_segment_socket_held_by_another_user_gets_nothing(start_gateway, monkeypatch):
    """The client hands segments only to a peer running as its own user: an
    abstract name can be taken by anyone who binds it first. Seen from a
    client of another uid, the gateway's socket is such a squatter."""
    gateway = start_gateway()
    name = gateway.info().segment_socket
    other_user = os.geteuid() + 1
    monkeypatch.setattr(_segment_door.os, "geteuid", lambda: other_user)
    with pytest.raises(_segment_door.DoorError, match="not this user"):
        _segment_door.Door.connect(name)
    monkeypatch.setattr(_segment_door, "_doors", {})
    remote = compute_this(server=gateway.url)
    array = np.arange(2 * MIB, dtype=np.float64)
    assert remote(where)(array).run()[1] != SEGMENT  # inline
    assert np.array_equal(remote(echo)(array).run(), array)


def test_threads_that_find_the_door_at_once_share_the_first_one(start_gateway):
    """Threads whose first calls to a gateway look for its door at the same
    time each connect; the first door kept is theirs, and a later thread's
    connection never closes the one the others' calls already use."""
    gateway = start_gateway()
    target = parse_server(gateway.url)
    info = gateway.info()
    first = _segment_door.remember(target, info)
    try:
        again = _segment_door.remember(target, info)  # a thread that looked meanwhile
        assert again is first
        assert not first.gone()
        assert _segment_door.cached(target) == (True, first)
    finally:
        _segment_door.forget(target, first)


def test_a_call_the_gateway_cannot_place_is_sent_again_inline(start_gateway):
    """A session the gateway does not hold (it restarted, or this is another
    gateway) is refused before anything runs, and the call goes again
    inline; a door that fails is dropped, and the next call finds it again."""
    gateway = start_gateway()
    located = compute_this(server=gateway.url)(where)
    array = np.arange(2 * MIB, dtype=np.float64)
    assert located(array).run()[1] == SEGMENT
    known, door = _segment_door.cached(located._settings.target())
    assert known and door is not None
    real, door.session = door.session, bytes(16)
    assert located(array).run()[1] != SEGMENT
    assert located(np.ones(3)).run()[0] == "ndarray"  # a plain inline call
    door.session = real
    door._sock.shutdown(socket.SHUT_RDWR)  # as if the gateway had gone
    assert located(array).run()[1] != SEGMENT
    assert located(array).run()[1] == SEGMENT
    assert gateway.restarts() == 0


def test_workers_started_without_the_template_take_segments_too(start_gateway):
    gateway = start_gateway("--no-template")
    remote = compute_this(server=gateway.url)
    array = np.arange(2 * MIB, dtype=np.float64)
    assert remote(where)(array).run() == ("ndarray", SEGMENT)
    assert np.array_equal(remote(echo)(array).run(), array)


# --- bounds ----------------------------------------------------------------------


def test_max_payload_bytes_counts_shared_memory_both_ways(start_gateway):
    gateway = start_gateway("--max-payload-bytes", str(4 * MIB))
    remote = compute_this(server=gateway.url)
    with pytest.raises(PayloadTooLarge, match="request payload is"):
        remote(echo)(np.ones(MIB)).run()  # 8 MiB

    def make(n):
        import numpy

        return numpy.ones(n)

    with pytest.raises(PayloadTooLarge, match="response"):
        remote(make)(MIB).run()
    # Nothing broke: the gateway and its workers go on.
    assert remote(echo)(np.ones(1000)).run().sum() == 1000
    assert np.array_equal(remote(echo)(np.ones(MIB // 16)).run(), np.ones(MIB // 16))
    assert gateway.restarts() == 0


# --- nothing left behind --------------------------------------------------------


def slow_echo(value, seconds):
    time.sleep(seconds)
    return value


def test_a_long_call_gets_its_result_through_the_session_it_went_through(remote):
    # The session sends nothing while the call runs, for longer than a
    # record may take to arrive (5 s): the gateway must not take the quiet
    # for a record cut short and close the session the result comes back in.
    value = np.arange(MIB // 8, dtype=np.float64)
    assert np.array_equal(remote(slow_echo)(value, 6.5).run(), value)


def _busy(gateway) -> bool:
    return any(worker.state == 3 for worker in gateway.info().workers)  # BUSY


def test_segments_are_gone_after_calls(remote, gateway):
    before = shm_entries()
    for _ in range(3):
        remote(echo)(np.ones(MIB)).run()
    wait_until(
        lambda: not (holders() & ({os.getpid()} | gateway.worker_pids() | {gateway.process.pid})),
        "the gateway, its workers and this client to let go of every segment",
    )
    assert shm_entries() == before


def test_a_client_killed_mid_call_leaves_nothing(start_gateway, tmp_path):
    gateway = start_gateway()
    before = shm_entries()
    script = textwrap.dedent(
        f"""
        import numpy, time
        from distribute_challenge import compute_this
        def slow_echo(value, seconds):
            time.sleep(seconds)
            return value
        compute_this(server={gateway.url!r})(slow_echo)(numpy.ones({2 * MIB}), 2).run()
        """
    )
    client = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
    try:
        wait_until(lambda: _busy(gateway), "the client's call to start")
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
        wait_until(lambda: not _busy(gateway), "the call to end")
        wait_until(
            lambda: not (holders() & (gateway.worker_pids() | {gateway.process.pid})),
            "the gateway and its workers to let go of every segment",
        )
    finally:
        client.kill()
    assert shm_entries() == before
    assert compute_this(server=gateway.url)(echo)(np.ones(MIB)).run().sum() == MIB


def _slow_call_in_background(gateway) -> tuple[threading.Thread, list[DistributeError]]:
    """A 5 s call with a segment, started; the thread, and what it raised."""
    remote = compute_this(server=gateway.url, busy_timeout=0)
    failures: list[DistributeError] = []

    def call():
        try:
            remote(slow_echo)(np.ones(2 * MIB), 5).run()
        except DistributeError as exc:
            failures.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(lambda: _busy(gateway), "the call to start")
    return caller, failures


def test_a_worker_killed_mid_call_leaves_nothing(start_gateway):
    gateway = start_gateway()
    before = shm_entries()
    caller, failures = _slow_call_in_background(gateway)
    busy = [w.pid for w in gateway.info().workers if w.state == 3]
    os.kill(busy[0], signal.SIGKILL)
    caller.join(timeout=30)
    assert len(failures) == 1 and isinstance(failures[0], WorkerCrashed)
    gateway.wait_for(lambda g: g.restarts() >= 1, "the worker to be replaced")
    wait_until(
        lambda: not (holders() & ({os.getpid(), gateway.process.pid} | gateway.worker_pids())),
        "every process to let go of the call's segment",
    )
    assert shm_entries() == before
    assert compute_this(server=gateway.url)(echo)(np.ones(MIB)).run().sum() == MIB


def test_a_gateway_killed_mid_call_leaves_nothing(launcher):
    gateway = launcher.start()
    before, sockets = shm_entries(), segment_sockets()
    assert len(sockets) >= 1
    workers = gateway.worker_pids()
    caller, failures = _slow_call_in_background(gateway)
    mine = {name for name in segment_sockets() if f"-{gateway.process.pid}-" in name}
    assert mine
    os.kill(gateway.process.pid, signal.SIGKILL)
    caller.join(timeout=30)
    gateway.stop(expect_clean=False)
    assert len(failures) == 1 and isinstance(failures[0], ServerUnavailable), failures
    wait_until(
        lambda: not (holders() & ({os.getpid(), gateway.process.pid} | workers)),
        "every process to let go of the call's segment",
    )
    assert shm_entries() == before
    assert not (segment_sockets() & mine)


# --- the format on its own --------------------------------------------------------


def test_segments_are_sealed_against_writes_and_resizing():
    pickled = _segments.dump((np.ones(MIB),), 1024)
    fd, layout = _segments.write_segment(pickled)
    try:
        assert os.fstat(fd).st_mode & 0o777 == 0o600
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 10)
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"x", 0)
        mapping = _segments.map_segment(fd, layout)
        (array,) = _segments.load(mapping, layout)
        assert array.sum() == MIB
    finally:
        os.close(fd)


def test_an_unsealed_or_short_segment_is_refused():
    fd = os.memfd_create("not-sealed", os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, 4096)
        layout = _segments.Layout(10, ())
        with pytest.raises(_segments.CodecError, match="not sealed"):
            _segments.map_segment(fd, layout)
    finally:
        os.close(fd)
    pickled = _segments.dump((b"x" * 100,), 1024)
    fd, layout = _segments.write_segment(pickled)
    try:
        with pytest.raises(_segments.CodecError, match="holds"):
            _segments.map_segment(fd, _segments.Layout(layout.size + 1, ()))
    finally:
        os.close(fd)


def test_malformed_headers_are_codec_errors():
    header = _segments.call_header(bytes(32), bytes(16), 0, 0)
    with pytest.raises(_segments.CodecError):
        _segments.parse_call(memoryview(header))
    body = _segments.encode_body(_segments.Layout(64, ((0, 10, _segments.HERE),)))
    with pytest.raises(_segments.CodecError, match="overlap"):
        _segments.parse_response(memoryview(_segments.response_header() + body))
    with pytest.raises(_segments.CodecError, match="without a segment"):
        _segments.parse_call(memoryview(header + _segments.encode_body(_segments.Layout(5, ()))))


@pytest.mark.parametrize("pagemap", [True, False], ids=["pagemap", "compared"])
def test_an_unwritten_argument_is_found_in_the_call_segment(monkeypatch, pagemap):
    """With its own pagemap readable (root, or a dumpable process) a worker
    tells written pages from the segment's; without it (not dumpable, not
    root) it compares the bytes: either way a result it did not write to is
    named where it lies, and one it wrote to is not."""
    monkeypatch.setattr(_segments, "_pagemap_readable", lambda: pagemap)
    array = np.arange(MIB, dtype=np.int64)
    fd, layout = _segments.write_segment(_segments.dump((array,), 1024))
    try:
        mapping = _segments.map_segment(fd, layout)
        borrowed = _segments.Borrowed(mapping, fd)
    finally:
        os.close(fd)
    (argument,) = _segments.load(mapping, layout)
    (offset, length, _source) = layout.buffers[0]
    assert borrowed.find(pickle.PickleBuffer(argument)) == offset
    assert borrowed.find(pickle.PickleBuffer(argument[MIB // 2 :])) == offset + length // 2
    argument[-1] += 1
    assert borrowed.find(pickle.PickleBuffer(argument)) is None
    assert borrowed.find(pickle.PickleBuffer(argument[:16])) == offset
