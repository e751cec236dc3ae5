"""The serve loop, one for every transport, and the worker's exit conventions.

The loop drives the worker's link (``mystic_native.WorkerLink``, which
speaks the transport, the GIL released while it waits): it says ``ready``
once, then answers requests one at a time until the gateway goes away. It
ends in one of two ways:

- the gateway closed its end (``GatewayGone``): exit status 0;
- a protocol error (``ProtocolError``) or a failed link (``OSError``): one
  line ``worker_shim: ...`` on stderr, exit status 1.

A function's own failures never reach the loop: ``execute`` turns them into
responses.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from mystic_native import GatewayGone, ProtocolError, Segment, WorkerLink
from mystic_wire import Buffer

#: Runs one request (its bytes, and the segment that came with it); the
#: response's pieces, and the descriptor of its result segment (the loop's
#: to close once sent) or None.
Execute = Callable[[memoryview, "Segment | None"], tuple[list[Buffer], int | None]]


def serve(link: WorkerLink, execute: Execute) -> int:
    """Answers requests on ``link`` until the gateway goes away; returns the
    process exit status."""
    receive, send = link.receive, link.send
    try:
        link.ready()
        while True:
            message = receive()
            # The message owns its bytes: what a function keeps of them
            # (an argument unpickled in place) stays valid.
            response, segment = execute(memoryview(message), message.segment)
            del message
            try:
                send(response, segment)
            finally:
                if segment is not None:
                    os.close(segment)
            del response
    except GatewayGone:
        return 0
    except ProtocolError as exc:
        return _fail(f"protocol error: {exc}")
    except OSError as exc:
        return _fail(f"the link failed: {exc}")


def _fail(message: str) -> int:
    print(f"worker_shim: {message}; exiting", file=sys.stderr, flush=True)
    return 1
