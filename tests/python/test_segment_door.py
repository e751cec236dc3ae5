"""The client's end of the segment door (``_segment_door.Door``) against a
scripted gateway that speaks the door's records over a real socket pair:
what a slow answer does to the session that other calls' results wait in.
The door itself, end to end, is in ``test_shared_memory.py``."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from distribute_challenge._segment_door import Door, DoorError
from mystic_wire import _records


def _memfd(text: bytes) -> int:
    fd = os.memfd_create("door-test")
    os.write(fd, text)
    return fd


def test_a_late_answer_fails_one_exchange_and_the_next_skips_it():
    ours, gateway = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.settimeout(0.2)
    door = Door(ours, bytes(_records.TOKEN_BYTES))
    with ours, gateway:
        with pytest.raises(DoorError, match="did not answer"):
            door.get(7)  # the gateway reads it, and answers too late
        assert not door.broken, "a slow answer must not end the session"
        first, _ = _records.receive(gateway)
        assert first.kind == _records.GET and first.handle == 7
        late, wanted = _memfd(b"late"), _memfd(b"wanted")
        _records.send(gateway, _records.Record(_records.GET, handle=7), late)

        def answer_the_next() -> None:
            record, _ = _records.receive(gateway)
            assert record.handle == 8
            _records.send(gateway, _records.Record(_records.GET, handle=8), wanted)

        answering = threading.Thread(target=answer_the_next)
        answering.start()
        taken = door.get(8)
        answering.join(10)
        try:
            assert os.pread(taken, 16, 0) == b"wanted"
        finally:
            for fd in (taken, late, wanted):
                os.close(fd)
