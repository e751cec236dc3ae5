"""The client's side of shared memory with a gateway on the same host.

A gateway announces its segment socket (an abstract Unix socket) in
``GetWorkers``; a client that can connect to it, and is let in (same host,
same user), is greeted with a session token. The client checks too: it
hands segments only to a peer that runs as its own user (``SO_PEERCRED``),
since an abstract name can be taken by anyone who binds it first (another
user, or another network namespace): a socket held by anyone else is
closed at once and the calls go inline. From then on, a call whose
pickle or buffers reach ``shared_memory_threshold`` is written into a sealed
memfd (``mystic_wire/_segments.py``) that the client hands over the socket
(``PUT``, answered with a handle) and names in the call; a result that comes
back in a segment is taken by its handle (``GET``). Anything else, or a
client that cannot reach the socket, sends calls inline as before.

One connection per target per process, shared by threads (each exchange
holds a lock; the gateway answers at once). A target that has no socket, or
whose socket cannot be reached, is asked again after ``RECHECK_AFTER``
seconds; a connection that fails is dropped and the call sent inline. A
daemon thread looks at the open connections every ``WATCH_EVERY`` seconds
and closes those whose gateway has gone, so that none outlives it.
Balanced targets (several gateways) never use shared memory: the gateway
that takes a call could be another than the one holding its segment.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

from mystic_wire import _records

from . import _process
from ._target import Target

if TYPE_CHECKING:
    from ._gateways import GatewayInfo

RECHECK_AFTER = 30.0
DISCOVERY_TIMEOUT = 5.0
# How long an exchange waits for the gateway's answer. One that comes later
# is skipped by the next exchange: a slow answer (a gateway short of CPU)
# fails one exchange, never the session that other calls' results wait in.
EXCHANGE_TIMEOUT = 30.0
WATCH_EVERY = 0.5

_STATUS_TEXT = {
    _records.REFUSED: "the gateway refused the segment",
    _records.TOO_LARGE: "the segment is over the gateway's --max-payload-bytes",
    _records.BUSY: "the gateway is receiving too many bytes already",
    _records.UNKNOWN: "the gateway holds no segment by that handle",
    _records.BAD_REQUEST: "the gateway did not understand the request",
}


class DoorError(OSError):
    """The segment socket failed, or refused what it was given."""


class Door:
    """A connection to a gateway's segment socket: one session."""

    def __init__(self, sock: socket.socket, session: bytes) -> None:
        self._sock = sock
        self.session = session
        self._lock = threading.Lock()
        self.broken = False
        # Answers still to come for exchanges that timed out.
        self._owed = 0

    @classmethod
    def connect(cls, name: str) -> Door:
        """Connects to the abstract socket ``name``; raises DoorError if it
        cannot be reached or does not greet."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(DISCOVERY_TIMEOUT)
            sock.connect("\0" + name)
            uid = peer_uid(sock)
            if uid != os.geteuid():
                raise DoorError(f"the segment socket {name!r} is held by uid {uid}, not this user")
            record, fd = _records.receive(sock)
            if fd is not None:
                os.close(fd)
            if record.kind != _records.HELLO:
                raise DoorError(f"the segment socket greeted with {record.kind!r}")
            # The gateway answers at once; one that does not within this
            # long is taken for gone, and the call goes inline.
            sock.settimeout(EXCHANGE_TIMEOUT)
        except (OSError, EOFError) as exc:
            sock.close()
            raise DoorError(f"cannot use the gateway's segment socket: {exc}") from exc
        return cls(sock, record.token)

    def put(self, fd: int) -> int:
        """Hands over a sealed segment; its handle."""
        reply = self._exchange(_records.Record(_records.PUT), fd)[0]
        return reply.handle

    def get(self, handle: int) -> int:
        """Takes the result segment ``handle`` (a descriptor, the caller's to close)."""
        reply, fd = self._exchange(_records.Record(_records.GET, handle=handle), None)
        if fd is None:
            raise DoorError("the gateway sent no segment")
        return fd

    def drop(self, handle: int) -> None:
        """Lets go of a segment handed over that no call took."""
        try:
            with self._lock:
                _records.send(self._sock, _records.Record(_records.DROP, handle=handle))
        except OSError:
            self.broken = True

    def close(self) -> None:
        """Ends the session. An exchange under way in another thread fails
        (the socket is shut down first) before the descriptor is closed, so
        that it never reaches another file given the same number."""
        self.broken = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # not connected any more
        with self._lock:
            self._sock.close()

    def gone(self) -> bool:
        """Whether the gateway has closed its end (checked between exchanges)."""
        if self.broken:
            return True
        if not self._lock.acquire(blocking=False):
            return False  # an exchange is under way: it finds out itself
        try:
            # Between exchanges the gateway sends nothing: readable is EOF.
            # (Polled without waiting: the socket's own timeout would wait.)
            readable, _, _ = select.select([self._sock], [], [], 0)
            return bool(readable) and self._sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
        finally:
            self._lock.release()

    def _exchange(
        self, record: _records.Record, fd: int | None
    ) -> tuple[_records.Record, int | None]:
        with self._lock:
            try:
                _records.send(self._sock, record, fd)
                reply, received = _records.receive(self._sock)
                while self._owed:  # a late answer to an earlier exchange
                    self._owed -= 1
                    if received is not None:
                        os.close(received)
                    reply, received = _records.receive(self._sock)
            except TimeoutError as exc:
                self._owed += 1
                raise DoorError(
                    f"the gateway's segment socket did not answer within {EXCHANGE_TIMEOUT:.0f}s"
                ) from exc
            except (OSError, EOFError) as exc:
                self.broken = True
                raise DoorError(f"the gateway's segment socket failed: {exc}") from exc
        if reply.status != _records.OK:
            if received is not None:
                os.close(received)
            text = _STATUS_TEXT.get(reply.status, f"status {reply.status}")
            raise DoorError(text)
        return reply, received


_PEER_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_uid(sock: socket.socket) -> int:
    """The user id the process at the other end of a Unix socket runs as."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEER_CREDENTIALS.size)
    _pid, uid, _gid = _PEER_CREDENTIALS.unpack(data)
    return uid


_lock = threading.Lock()
# Per target: (pid, the door or None, when it was last looked for).
_doors: dict[Target, tuple[int, Door | None, float]] = {}


def cached(target: Target) -> tuple[bool, Door | None]:
    """Whether ``target``'s door is known in this process (found, or found
    missing not long ago), and the door."""
    if target.balanced:
        return True, None
    with _lock:
        entry = _doors.get(target)
    if entry is None or entry[0] != _process.pid():
        return False, None
    _pid, door, since = entry
    if door is not None:
        return (True, door) if not door.broken else (False, None)
    return time.monotonic() - since < RECHECK_AFTER, None


def remember(target: Target, info: GatewayInfo | None) -> Door | None:
    """Connects to the door ``info`` (the gateway's ``GetWorkers`` answer,
    None if it gave none) announces, and keeps it for ``target``. Threads
    that looked for it at once share the first door kept: the others'
    connections are closed, never one that calls already use."""
    door = None
    if info is not None and info.segment_socket:
        try:
            door = Door.connect(info.segment_socket)
        except DoorError:
            pass  # not reachable from here: inline
    with _lock:
        previous = _doors.get(target)
        if previous is not None and previous[0] == _process.pid():
            kept = previous[1]
            if kept is not None and not kept.broken:
                if door is not None:
                    door.close()
                return kept
        _doors[target] = (_process.pid(), door, time.monotonic())
        if door is not None:
            _watch()
    return door


_watching = [0]  # the pid whose watcher runs


def _watch() -> None:
    """Starts this process's watcher, once (call with ``_lock`` held)."""
    if _watching[0] != _process.pid():
        _watching[0] = _process.pid()
        threading.Thread(target=_watcher, name="segment-door-watcher", daemon=True).start()


def _watcher() -> None:
    pid = _process.pid()
    while True:
        time.sleep(WATCH_EVERY)
        with _lock:
            doors = [
                (target, entry[1])
                for target, entry in _doors.items()
                if entry[0] == pid and entry[1] is not None
            ]
        for target, door in doors:
            if door.gone():
                forget(target, door)


def forget(target: Target, door: Door) -> None:
    """``door`` failed: the next call looks for the gateway's door again."""
    door.close()
    with _lock:
        entry = _doors.get(target)
        if entry is not None and entry[1] is door:
            del _doors[target]
