"""The worker's one serve loop (``worker_shim._loop``) over a scripted channel,
and the pipe and shm channels' edges, without a gateway: the order of a call's
steps, the exit statuses, one stderr line per failure."""

from __future__ import annotations

import io
import os
import socket

import pytest

from worker_shim import _loop, _pipe, _shm
from worker_shim._channel import GatewayGone, ProtocolError


class ScriptedChannel:
    """Hands out the given requests, then ends with ``end``; records every step."""

    def __init__(self, requests: list[bytes], end: BaseException) -> None:
        self.requests = list(requests)
        self.end = end
        self.steps: list[tuple] = []
        self.handed_out: list[memoryview] = []

    def ready(self) -> None:
        self.steps.append(("ready",))

    def receive(self) -> tuple[memoryview, int]:
        if not self.requests:
            raise self.end
        payload = memoryview(self.requests.pop(0))
        self.handed_out.append(payload)
        self.steps.append(("receive", bytes(payload)))
        return payload, len(self.handed_out)

    def release(self, ticket: int) -> None:
        # The payload is already let go of when its ticket comes back.
        with pytest.raises(ValueError):
            bytes(self.handed_out[ticket - 1])
        self.steps.append(("release", ticket))

    def send(self, pieces: list) -> None:
        self.steps.append(("send", b"".join(pieces)))


def shout(payload: memoryview) -> list:
    return [b"<", bytes(payload).upper(), b">"]


def test_each_request_is_released_before_its_response_is_sent(capsys):
    channel = ScriptedChannel([b"one", b"two"], GatewayGone())
    assert _loop.serve(channel, shout) == 0
    assert channel.steps == [
        ("ready",),
        ("receive", b"one"),
        ("release", 1),
        ("send", b"<ONE>"),
        ("receive", b"two"),
        ("release", 2),
        ("send", b"<TWO>"),
    ]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("end", "line"),
    [
        (ProtocolError("bad line"), "worker_shim: protocol error: bad line; exiting"),
        (_shm.ShmProtocolError("bad ring"), "worker_shim: protocol error: bad ring; exiting"),
        (BrokenPipeError(32, "Broken pipe"), "worker_shim: the protocol stream failed: "),
    ],
    ids=["protocol", "shm-protocol", "stream"],
)
def test_a_protocol_or_stream_error_exits_1_with_one_line(capsys, end, line):
    assert _loop.serve(ScriptedChannel([b"call"], end), shout) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith(line)


def test_the_pipe_channel_ends_with_the_gateway_or_at_a_broken_line():
    channel = _pipe.PipeChannel(io.BytesIO(b"bm90IGEgbGluZQ"), io.BytesIO())
    with pytest.raises(ProtocolError, match="inside a request line"):
        channel.receive()
    with pytest.raises(GatewayGone):
        _pipe.PipeChannel(io.BytesIO(b""), io.BytesIO()).receive()


def test_the_pipe_channel_lets_go_of_the_pieces_it_sent():
    writer = io.BytesIO()
    pieces = [b"MCR1", memoryview(b"payload")]
    _pipe.PipeChannel(io.BytesIO(), writer).send(pieces)
    assert pieces == []
    assert writer.getvalue() == b"TUNSMXBheWxvYWQ=\n"


def test_a_file_that_is_no_segment_is_an_attach_error_with_exit_status_1(tmp_path):
    empty = os.open(tmp_path / "empty", os.O_RDWR | os.O_CREAT)
    ours, theirs = socket.socketpair()
    with ours, pytest.raises(_shm.AttachError, match="cannot attach to shared memory") as raised:
        _shm.attach(empty, theirs.detach())
    assert raised.value.status == 1
