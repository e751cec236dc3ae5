"""What a transport gives the serve loop: a channel, and the two ways it fails.

A channel carries whole payloads between the gateway and the worker, one
request in, one response out, in turn. ``_pipe.PipeChannel`` and
``_shm.ShmChannel`` implement it; ``_loop.serve`` drives either.
"""

from __future__ import annotations

from typing import Protocol

from mystic_wire import Buffer


class GatewayGone(EOFError):
    """The gateway closed its end: the worker's normal way to end (exit 0)."""


class ProtocolError(Exception):
    """The gateway sent what the transport's protocol does not allow (exit 1)."""


class Channel(Protocol):
    """One worker's connection to the gateway. Each method raises
    :class:`GatewayGone` when the gateway has gone, :class:`ProtocolError` on
    input that breaks the protocol, and ``OSError`` when the stream fails."""

    def ready(self) -> None:
        """Tells the gateway, once, that the worker takes calls."""

    def receive(self) -> tuple[memoryview, int]:
        """Waits for the next request. Returns its payload and a ticket to
        pass to :meth:`release` once the payload is no longer used."""

    def release(self, ticket: int, /) -> None:
        """Lets go of what :meth:`receive` handed out; called before :meth:`send`."""

    def send(self, pieces: list[Buffer]) -> None:
        """Sends one response payload, made of ``pieces`` in order. The
        channel may empty the list to free the pieces early."""
