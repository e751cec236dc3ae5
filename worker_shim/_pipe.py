"""The pipe transport's protocol loop (wire-compatible with the original design).

The worker writes ``ready\\n`` once. Then each request is one line on the
protocol input: the base64 of the request payload plus ``\\n``; the worker
answers each with one line on the protocol output, the base64 of the response
payload plus ``\\n``. EOF on the input ends the worker (exit 0); a line that is
not base64 is a protocol error (a message on stderr, exit 1).
"""

from __future__ import annotations

import binascii
import sys
from collections.abc import Callable
from typing import BinaryIO

READY_LINE = b"ready\n"

Execute = Callable[[memoryview], list]


def serve(reader: BinaryIO, writer: BinaryIO, execute: Execute) -> int:
    """Answers request lines until EOF; returns the process exit status."""
    writer.write(READY_LINE)
    writer.flush()
    while True:
        line = reader.readline()
        if not line:
            return 0
        if not line.endswith(b"\n"):
            return _protocol_error(f"the input ended inside a request line ({len(line)} bytes)")
        try:
            payload = binascii.a2b_base64(memoryview(line)[:-1], strict_mode=True)
        except binascii.Error as exc:
            return _protocol_error(f"a request line is not base64 ({exc})")
        del line
        response = b"".join(execute(memoryview(payload)))
        del payload
        writer.write(binascii.b2a_base64(response, newline=True))
        writer.flush()
        del response


def _protocol_error(message: str) -> int:
    print(f"worker_shim: protocol error: {message}; exiting", file=sys.stderr, flush=True)
    return 1
