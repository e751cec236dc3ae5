"""The worker's one serve loop (``worker_shim._loop``) over a scripted link,
and the native link's pipe edges over a real socket pair, without a gateway:
the order of a call's steps, what happens to a result's segment, the exit
statuses, one stderr line per failure."""

from __future__ import annotations

import base64
import gc
import os
import socket

import pytest

from mystic_native import GatewayGone, ProtocolError, WorkerLink
from worker_shim import _loop


class ScriptedLink:
    """Hands out the given requests, then ends with ``end``; records every
    step. A request is bytes; its segment (``None``) rides along."""

    def __init__(self, requests: list[bytes], end: BaseException, send_fails: bool = False):
        self.requests = list(requests)
        self.end = end
        self.send_fails = send_fails
        self.steps: list[tuple] = []

    def ready(self) -> None:
        self.steps.append(("ready",))

    def receive(self) -> Message:
        if not self.requests:
            raise self.end
        message = Message(self.requests.pop(0))
        self.steps.append(("receive", bytes(message)))
        return message

    def send(self, pieces: list, segment: int | None = None) -> None:
        self.steps.append(("send", b"".join(pieces), segment is not None))
        if self.send_fails:
            raise BrokenPipeError(32, "Broken pipe")


class Message(bytes):
    segment = None


def shout(payload: memoryview, segment) -> tuple[list, int | None]:
    assert segment is None
    return [b"<", bytes(payload).upper(), b">"], None


def test_each_request_is_answered_in_order(capsys):
    link = ScriptedLink([b"one", b"two"], GatewayGone())
    assert _loop.serve(link, shout) == 0
    assert link.steps == [
        ("ready",),
        ("receive", b"one"),
        ("send", b"<ONE>", False),
        ("receive", b"two"),
        ("send", b"<TWO>", False),
    ]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("send_fails", [False, True], ids=["sent", "send-failed"])
def test_a_result_segment_is_closed_once_its_response_went_or_failed(send_fails):
    read_end, write_end = os.pipe()
    os.close(write_end)

    def with_a_segment(payload, segment):
        return [b"answer"], read_end

    link = ScriptedLink([b"call"], GatewayGone(), send_fails=send_fails)
    assert _loop.serve(link, with_a_segment) == (1 if send_fails else 0)
    assert link.steps[-1] == ("send", b"answer", True)
    with pytest.raises(OSError):
        os.fstat(read_end)


@pytest.mark.parametrize(
    ("end", "line"),
    [
        (ProtocolError("bad line"), "worker_shim: protocol error: bad line; exiting"),
        (BrokenPipeError(32, "Broken pipe"), "worker_shim: the link failed: "),
    ],
    ids=["protocol", "link"],
)
def test_a_protocol_or_link_error_exits_1_with_one_line(capsys, end, line):
    assert _loop.serve(ScriptedLink([b"call"], end), shout) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith(line)


def test_a_function_s_failure_never_reaches_the_loop():
    def fails(payload, segment):
        raise RuntimeError("execute must not raise")

    with pytest.raises(RuntimeError):
        _loop.serve(ScriptedLink([b"call"], GatewayGone()), fails)


# The native link (pipe) over a real socket pair ---------------------------------


@pytest.fixture
def pipe_link():
    gateway, worker = socket.socketpair()
    link = WorkerLink(os.dup(worker.fileno()), "pipe", 64)
    worker.close()
    yield gateway, link
    del link
    gc.collect()
    gateway.close()


def test_the_pipe_link_ends_with_the_gateway_or_at_a_broken_line(pipe_link):
    gateway, link = pipe_link
    link.ready()
    assert gateway.recv(16) == b"ready\n"
    gateway.sendall(b"bm90IGEgbGluZQ")  # no newline, then EOF
    gateway.shutdown(socket.SHUT_WR)
    with pytest.raises(ProtocolError, match="inside a request line"):
        link.receive()


def test_the_pipe_link_says_the_gateway_went_at_eof_between_lines(pipe_link):
    gateway, link = pipe_link
    gateway.sendall(base64.b64encode(b"one") + b"\n")
    gateway.shutdown(socket.SHUT_WR)
    assert bytes(link.receive()) == b"one"
    with pytest.raises(GatewayGone):
        link.receive()


def test_the_pipe_link_refuses_a_line_over_the_payload_limit(pipe_link):
    gateway, link = pipe_link
    gateway.sendall(base64.b64encode(bytes(65)) + b"\n")
    with pytest.raises(ProtocolError, match="65 bytes, over the limit of 64"):
        link.receive()
    gateway.sendall(b"A" * 200)
    with pytest.raises(ProtocolError, match="longer than the payload limit allows"):
        link.receive()


def test_the_pipe_link_refuses_a_line_that_is_not_base64(pipe_link):
    gateway, link = pipe_link
    gateway.sendall(b"not base64!\n")
    with pytest.raises(ProtocolError, match="not base64"):
        link.receive()


def test_the_pipe_link_sends_any_buffers_as_one_line_and_a_segment_with_it(pipe_link):
    gateway, link = pipe_link
    read_end, write_end = os.pipe()
    try:
        floats = memoryview(bytearray(16)).cast("d")  # not bytes: any format goes
        link.send([b"MCR1", floats, memoryview(b"!")], read_end)
        line, fds, _flags, _address = socket.recv_fds(gateway, 1 << 10, 2)
        assert line == base64.b64encode(b"MCR1" + bytes(16) + b"!") + b"\n"
        assert len(fds) == 1
        os.close(fds[0])
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_request_outlives_the_next_one_while_a_view_of_it_is_held(pipe_link):
    gateway, link = pipe_link
    gateway.sendall(base64.b64encode(b"first") + b"\n" + base64.b64encode(b"second") + b"\n")
    kept = memoryview(link.receive())[1:]
    assert bytes(link.receive()) == b"second"
    assert bytes(kept) == b"irst"
