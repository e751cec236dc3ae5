"""The pipe transport's channel (wire-compatible with the original design).

The worker writes ``ready\\n`` once. Then each request is one line on the
protocol input: the base64 of the request payload plus ``\\n``; the worker
answers each with one line on the protocol output, the base64 of the response
payload plus ``\\n``. EOF on the input means the gateway has gone; a last line
without its ``\\n``, or a line that is not base64, is a protocol error.
"""

from __future__ import annotations

import binascii
from typing import BinaryIO

from mystic_wire import Buffer

from ._channel import GatewayGone, ProtocolError

READY_LINE = b"ready\n"


class PipeChannel:
    """Request and response lines over the protocol's two streams."""

    def __init__(self, reader: BinaryIO, writer: BinaryIO) -> None:
        self.reader = reader
        self.writer = writer

    def ready(self) -> None:
        self.writer.write(READY_LINE)
        self.writer.flush()

    def receive(self) -> tuple[memoryview, int]:
        """Reads and decodes the next request line; the ticket is always 0."""
        line = self.reader.readline()
        if not line:
            raise GatewayGone
        if not line.endswith(b"\n"):
            raise ProtocolError(f"the input ended inside a request line ({len(line)} bytes)")
        try:
            payload = binascii.a2b_base64(memoryview(line)[:-1], strict_mode=True)
        except binascii.Error as exc:
            raise ProtocolError(f"a request line is not base64 ({exc})") from exc
        return memoryview(payload), 0

    def release(self, ticket: int) -> None:
        """Nothing to do: the payload was decoded into its own bytes."""

    def send(self, pieces: list[Buffer]) -> None:
        """Writes one response line. Empties ``pieces`` once they are joined,
        so that a large result is not held in three copies at once."""
        response = b"".join(pieces)
        pieces.clear()
        self.writer.write(binascii.b2a_base64(response, newline=True))
        self.writer.flush()
