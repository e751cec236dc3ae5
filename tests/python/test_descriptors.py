"""Descriptors on every path, on both transports: a worker takes a call's
shared-memory segment off its channel before anything about the call can
fail and closes it whatever happens (a result, an exception, a miss, a
function it cannot keep or unpickle, a malformed body), so that no segment
outlives its call nor reaches the next caller; what it receives is
close-on-exec."""

from __future__ import annotations

import base64
import os
import socket
import struct

import numpy as np

from distribute_challenge import _segment_door, compute_this
from distribute_challenge._pb import gateway_pb2
from mystic_native import WorkerLink
from mystic_wire import (
    ERROR,
    _records,
    _segments,
    attach,
    decode_response,
    encode_function,
)

MIB = 1 << 20
SEGMENT = "memfd:mystic-segment"


def segments_open(pid: int) -> int:
    """How many call segments process ``pid`` holds by descriptor."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if SEGMENT in os.readlink(f"/proc/{pid}/fd/{fd}"):
                count += 1
        except OSError:
            continue
    return count


def only_worker(gateway) -> int:
    (pid,) = gateway.worker_pids()
    return pid


def first_bytes(array):
    return bytes(memoryview(array).cast("B")[:16])


def test_a_function_too_large_for_the_worker_leaks_no_segment(start_gateway):
    """A function whose pickle is over the worker's 64 MiB bound runs but is
    not kept: each call brings it again (no miss), and the caller's segment
    goes with each call instead of piling up in the worker."""
    gateway = start_gateway("--workers", "1")
    ballast = os.urandom(65 * MIB)

    def heavy(array):
        return len(ballast) + int(array[0])

    remote = compute_this(server=gateway.url)(heavy)
    worker = only_worker(gateway)
    for n in range(4):
        assert remote(np.full(4 * MIB // 8, n, dtype=np.int64)).run() == len(ballast) + n
        assert segments_open(worker) == 0
    assert gateway.restarts() == 0


def test_a_malformed_call_leaves_no_segment_for_the_next_caller(start_gateway):
    """A call whose shared-memory header is valid (so the gateway hands its
    segment on) but whose body is not is refused by the worker, which still
    takes that segment: the next caller's call gets its own."""
    gateway = start_gateway("--workers", "1")
    door = _segment_door.Door.connect(gateway.info().segment_socket)
    # Both large enough to travel in a segment.
    secret = np.frombuffer(b"first caller's!!" * (MIB // 8), dtype=np.uint8)
    pickled = _segments.dump(((secret,), {}, ()), 1)
    fd, _layout = _segments.write_segment(pickled)
    try:
        handle = door.put(fd)
    finally:
        os.close(fd)
    function = encode_function(first_bytes)
    header = _segments.call_header(function.digest, door.session, handle, 0)
    listed_but_missing = struct.pack("<QI", 64, 1000)  # a thousand buffers, none listed
    payload = attach(function, header + listed_but_missing)
    response = gateway.stub().Execute(gateway_pb2.ExecuteRequest(payload=payload), timeout=30)
    answer = decode_response(response.payload)
    assert answer.kind == ERROR and "could not decode" in answer.value
    assert segments_open(only_worker(gateway)) == 0

    mine = np.frombuffer(b"second caller..." * (MIB // 8), dtype=np.uint8)
    remote = compute_this(server=gateway.url)(first_bytes)
    assert remote(mine).run() == b"second caller..."
    assert segments_open(only_worker(gateway)) == 0
    door.close()


def test_received_descriptors_are_close_on_exec():
    """Whatever the receiver starts (a worker's function running a program)
    inherits none of the segments it received: neither a worker's link nor
    the client's records hand out an inheritable descriptor."""
    gateway, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    read_end, write_end = os.pipe()
    os.set_inheritable(read_end, True)
    try:
        # A worker's link (the pipe transport): a request line with a segment.
        link = WorkerLink(os.dup(worker.fileno()), "pipe", MIB)
        link.ready()
        line = base64.b64encode(b"request") + b"\n"
        socket.send_fds(gateway, [line], [read_end])
        message = link.receive()
        assert bytes(message) == b"request"
        assert message.segment is not None
        assert not os.get_inheritable(message.segment.fileno())
        message.segment.close()
        # The client's records.
        _records.send(gateway, _records.Record(_records.PUT, handle=7), read_end)
        record, fd = _records.receive(worker)
        assert (record.kind, record.handle) == (_records.PUT, 7)
        assert fd is not None and not os.get_inheritable(fd)
        os.close(fd)
    finally:
        for end in (read_end, write_end):
            os.close(end)
        gateway.close()
        worker.close()
