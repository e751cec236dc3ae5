"""File-descriptor hygiene: the protocol gets private fds, user code gets the rest.

At start-up the protocol's input (fd 0) and output (fd 1) are duplicated to
private, non-inheritable fds. Then fd 0 is pointed at ``/dev/null`` and fd 1 at
fd 2 (stderr), and ``sys.stdin`` / ``sys.stdout`` are rebound to match. Nothing
a function writes, even with ``os.write(1, ...)``, from C code or from a child
process, can reach the protocol stream; it lands in the worker's stderr, which
the gateway logs.
"""

from __future__ import annotations

import io
import os
import sys

BUFFER_BYTES = 1 << 20


def take_protocol_streams() -> tuple[io.BufferedReader, io.BufferedWriter]:
    """Moves the protocol off fds 0/1 and returns binary streams for it."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    protocol_in = os.dup(0)
    protocol_out = os.dup(1)

    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)

    sys.stdin = open(0, encoding="utf-8", closefd=False)
    sys.stdout = open(
        1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
    )

    reader = open(protocol_in, "rb", buffering=BUFFER_BYTES)
    writer = open(protocol_out, "wb", buffering=BUFFER_BYTES)
    return reader, writer
