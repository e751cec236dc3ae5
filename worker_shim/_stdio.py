"""File-descriptor hygiene: the link gets a private fd, user code gets the rest.

A worker starts with its link to the gateway as fd 0 and its stderr as fds
1 and 2 (all sockets). At start-up the link is duplicated to a private,
non-inheritable fd; then fd 0 is pointed at ``/dev/null`` and fd 1 at fd 2,
and ``sys.stdin`` / ``sys.stdout`` are rebound to match. Nothing a
function reads or writes, even with ``os.write(1, ...)``, from C code or
from a child process, can reach the link; what it writes lands in the
worker's stderr, which the gateway logs.
"""

from __future__ import annotations

import os
import sys


def take_link() -> int:
    """Moves the link off fd 0; returns its new, private descriptor."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    link = os.dup(0)  # not inheritable

    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)

    sys.stdin = open(0, encoding="utf-8", closefd=False)
    sys.stdout = open(
        1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
    )
    return link
