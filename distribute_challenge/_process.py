"""This process's id, kept up to date across ``os.fork()`` without a system
call per read: what the client caches per process (its connections, its
asyncio completion queues, its segment doors) is checked against it on
every call."""

from __future__ import annotations

import os

_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


def pid() -> int:
    """``os.getpid()``, as of the last fork."""
    return _pid[0]
