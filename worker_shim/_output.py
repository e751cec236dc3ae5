"""What a call prints, kept within a bound: the text files that stand in for
``sys.stdout`` and ``sys.stderr`` while a call runs (``_executor.py``) or
while a streamed call makes its next chunk of items (``_items.py``).

A call's stdout and its stderr are each a :class:`BoundedText`, which
keeps at most ``--max-output-bytes`` of what is written to it, counted in
UTF-8 bytes (what the text weighs in the response): the first half as it
comes, and a rolling tail of the last half. What falls between them is
counted, not kept, and :meth:`BoundedText.getvalue` puts a line saying how
much in its place (one line, wrapped here)::

    <head>
    [... 570.2 MiB (597884416 bytes) of stdout dropped: the worker keeps the first
    and the last 2 MiB of what a call prints to it (--max-output-bytes) ...]
    <tail>

Memory stays bounded whatever is written: one enormous ``write`` is cut to
its head and tail without another copy of it being made, and small writes
are joined into pieces of :data:`PIECE_BYTES` as they come, so that a
million one-character writes cost a few strings, not a million. Cuts fall
between characters, never inside one.
"""

from __future__ import annotations

import io
import threading
from collections import deque

#: The gateway's default ``--max-output-bytes``, for a worker started without it.
DEFAULT_MAX_BYTES = 4 << 20
#: Small writes are joined into pieces of about this many bytes...
PIECE_BYTES = 64 << 10
#: ... or of this many writes, whichever comes first.
PIECE_WRITES = 256
#: A long non-ASCII text is measured this many characters at a time.
_MEASURE_CHARS = 1 << 20
#: What :meth:`BoundedText.getvalue` answers when it cannot gather the text.
_LOST = "\n[... what the call printed here was lost: the worker could not gather it ...]\n"


class _Settings:
    """The worker's bound, per call and per stream (``--max-output-bytes``)."""

    max_bytes = DEFAULT_MAX_BYTES


_SETTINGS = _Settings()


def set_max_bytes(max_bytes: int) -> None:
    """Sets the bound of every sink made from now on (at start-up)."""
    if max_bytes < 0:
        raise ValueError(f"the output bound must be 0 or more bytes, not {max_bytes}")
    _SETTINGS.max_bytes = max_bytes


def capture(stream: str) -> BoundedText:
    """A sink for one call's (or one chunk's) ``stream``, ``"stdout"`` or
    ``"stderr"``, under the worker's bound."""
    return BoundedText(stream, _SETTINGS.max_bytes)


class BoundedText(io.TextIOBase):
    """A write-only text file that keeps the head and the tail of what it is
    given (see the module docs). Safe to write from several threads."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, stream: str, max_bytes: int) -> None:
        super().__init__()
        self._stream = stream
        self._head_bytes = max_bytes // 2
        self._tail_bytes = max_bytes - self._head_bytes
        self._head = _Pieces()
        self._tail = _Pieces()
        # Once a write did not fit the head, everything goes to the tail.
        self._head_open = True
        self._written = 0
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"string argument expected, got {type(text).__name__!r}")
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        if text:
            with self._lock:
                self._add(text)
        return len(text)

    def getvalue(self) -> str:
        """The head, the line saying what was dropped (if anything was), and
        the tail. Never raises, even after :meth:`close`."""
        try:
            with self._lock:
                head = self._head.text()
                tail = _suffix(self._tail.text(), self._tail_bytes)
                dropped = self._written - self._head.nbytes - utf8_len(tail)
                if dropped == 0:
                    return head + tail
                return head + self._note(dropped) + tail
        except Exception:  # no memory for the text, say: the call still answers
            return _LOST

    def _add(self, text: str) -> None:
        nbytes = utf8_len(text)
        self._written += nbytes
        start = 0
        if self._head_open:
            room = self._head_bytes - self._head.nbytes
            if nbytes <= room:
                self._head.add(text, nbytes)
                return
            self._head_open = False
            first = _prefix(text, room)
            taken = utf8_len(first)
            self._head.add(first, taken)
            start, nbytes = len(first), nbytes - taken
        if nbytes >= self._tail_bytes:
            # This write alone fills the tail: what the tail held goes.
            self._tail = _Pieces()
            last = _suffix(text, self._tail_bytes, start)
            self._tail.add(last, utf8_len(last))
        else:
            self._tail.add(text[start:] if start else text, nbytes)
            self._tail.drop_oldest(self._tail_bytes)

    def _note(self, dropped: int) -> str:
        head, tail = _size(self._head_bytes), _size(self._tail_bytes)
        if not self._tail_bytes:
            kept = "none"
        elif head == tail:
            kept = f"the first and the last {head}"
        else:
            kept = f"the first {head} and the last {tail}"
        amount = _size(dropped)
        if dropped >= 1024:
            amount += f" ({dropped} bytes)"
        return (
            f"\n[... {amount} of {self._stream} dropped: the worker keeps {kept} "
            "of what a call prints to it (--max-output-bytes) ...]\n"
        )


class _Pieces:
    """Text in order as few strings: small writes are joined into pieces of
    about :data:`PIECE_BYTES` (or :data:`PIECE_WRITES` writes); a large one
    is a piece of its own. :attr:`nbytes` is what it holds, in UTF-8 bytes."""

    __slots__ = ("_done", "_open", "_open_bytes", "nbytes")

    def __init__(self) -> None:
        self._done: deque[tuple[str, int]] = deque()
        self._open: list[str] = []
        self._open_bytes = 0
        self.nbytes = 0

    def add(self, text: str, nbytes: int) -> None:
        self.nbytes += nbytes
        if nbytes >= PIECE_BYTES:
            self._close_open()
            self._done.append((text, nbytes))
            return
        self._open.append(text)
        self._open_bytes += nbytes
        if self._open_bytes >= PIECE_BYTES or len(self._open) >= PIECE_WRITES:
            self._close_open()

    def drop_oldest(self, keep: int) -> None:
        """Drops whole pieces from the front while the rest still holds
        ``keep`` bytes (the last cut, inside a piece, is :func:`_suffix`'s)."""
        done = self._done
        while done and self.nbytes - done[0][1] >= keep:
            self.nbytes -= done.popleft()[1]

    def text(self) -> str:
        return "".join([piece for piece, _ in self._done] + self._open)

    def _close_open(self) -> None:
        if self._open:
            self._done.append(("".join(self._open), self._open_bytes))
            self._open = []
            self._open_bytes = 0


def utf8_len(text: str) -> int:
    """How many bytes ``text`` is in UTF-8 (a lone surrogate counting 3, as
    pickle writes it), measured a slice at a time: never a copy of all of it."""
    if text.isascii():
        return len(text)
    return sum(
        len(text[at : at + _MEASURE_CHARS].encode("utf-8", "surrogatepass"))
        for at in range(0, len(text), _MEASURE_CHARS)
    )


def _prefix(text: str, nbytes: int) -> str:
    """The longest start of ``text`` that is at most ``nbytes`` in UTF-8."""
    start = text[:nbytes]  # a character is at least a byte
    if start.isascii():
        return start
    encoded = start.encode("utf-8", "surrogatepass")
    cut = min(nbytes, len(encoded))
    while cut < len(encoded) and _continues(encoded[cut]):
        cut -= 1  # back to the first byte of the character cut in two
    return encoded[:cut].decode("utf-8", "surrogatepass")


def _suffix(text: str, nbytes: int, start: int = 0) -> str:
    """The longest end of ``text[start:]`` that is at most ``nbytes`` in UTF-8."""
    end = text[max(start, len(text) - nbytes) :]
    if end.isascii():
        return end
    encoded = end.encode("utf-8", "surrogatepass")
    cut = max(0, len(encoded) - nbytes)
    while cut < len(encoded) and _continues(encoded[cut]):
        cut += 1  # on to the first byte of the next character
    return encoded[cut:].decode("utf-8", "surrogatepass")


def _continues(byte: int) -> bool:
    """Whether ``byte`` continues a UTF-8 character rather than starting one."""
    return byte & 0xC0 == 0x80


def _size(nbytes: int) -> str:
    """``nbytes`` for a reader: ``512 bytes``, ``2 MiB``, ``570.2 MiB``."""
    if nbytes < 1024:
        return f"{nbytes} bytes"
    value, unit = nbytes / 1024, "KiB"
    for larger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"
