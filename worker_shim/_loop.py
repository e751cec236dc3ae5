"""The serve loop, one for every transport, and the worker's exit conventions.

The loop says ``ready`` once, then answers requests one at a time until the
gateway goes away. It ends in one of three ways:

- the gateway closed its end (:class:`GatewayGone`): exit status 0;
- a protocol error (:class:`ProtocolError`) or a failed stream (``OSError``):
  one line ``worker_shim: ...`` on stderr, exit status 1.

A function's own failures never reach the loop: ``execute`` turns them into
responses.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from mystic_wire import Buffer

from ._channel import Channel, GatewayGone, ProtocolError

Execute = Callable[[memoryview], list[Buffer]]


def serve(channel: Channel, execute: Execute) -> int:
    """Answers requests on ``channel`` until the gateway goes away; returns the
    process exit status."""
    receive, release, send = channel.receive, channel.release, channel.send
    try:
        channel.ready()
        while True:
            payload, ticket = receive()
            response = execute(payload)
            # The request is let go of before the response is sent: once the
            # gateway has the response it may reuse what the request held.
            payload.release()
            release(ticket)
            send(response)
            del response
    except GatewayGone:
        return 0
    except ProtocolError as exc:
        return _fail(f"protocol error: {exc}")
    except OSError as exc:
        return _fail(f"the protocol stream failed: {exc}")


def _fail(message: str) -> int:
    print(f"worker_shim: {message}; exiting", file=sys.stderr, flush=True)
    return 1
