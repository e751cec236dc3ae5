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
are joined into pieces of :data:`PIECE_CHARS` characters (or
:data:`PIECE_WRITES` writes) before they are kept, so that a million one-character writes cost a
few strings, not a million. Cuts fall between characters, never inside one.
"""

from __future__ import annotations

import io
import threading
from collections import deque

#: The gateway's default ``--max-output-bytes``, for a worker started without it.
DEFAULT_MAX_BYTES = 4 << 20
#: Small writes are joined into pieces of about this many characters...
PIECE_CHARS = 64 << 10
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
        self._lock = threading.Lock()
        # Small writes wait here, to be taken as one piece.
        self._staged: list[str] = []
        self._staged_chars = 0
        self._written = 0
        self._head: list[str] = []
        self._head_bytes = max_bytes // 2
        # None once a piece did not fit: everything goes to the tail then.
        self._head_room: int | None = self._head_bytes
        self._tail = _Tail(max_bytes - self._head_bytes)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"string argument expected, got {type(text).__name__!r}")
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        if len(text) >= PIECE_CHARS:
            with self._lock:
                self._take_staged()
                self._take(text)
            return len(text)
        # No lock for a small write: appending to a list is atomic, only
        # the taker removes from it, and the count is a hint (a write lost
        # from it only makes a piece a little larger).
        staged = self._staged
        staged.append(text)
        self._staged_chars += len(text)
        if self._staged_chars >= PIECE_CHARS or len(staged) >= PIECE_WRITES:
            with self._lock:
                self._take_staged()
        return len(text)

    def getvalue(self) -> str:
        """The head, the line saying what was dropped (if anything was), and
        the tail. Never raises, even after :meth:`close`."""
        try:
            with self._lock:
                self._take_staged()
                head = "".join(self._head)
                tail = self._tail.text()
                dropped = self._written - utf8_len(head) - utf8_len(tail)
                if dropped == 0:
                    return head + tail
                return head + self._note(dropped) + tail
        except Exception:  # no memory for the text, say: the call still answers
            return _LOST

    def _take_staged(self) -> None:
        """Takes the staged writes as one piece (holding the lock)."""
        staged = self._staged
        count = len(staged)
        if count:
            text = "".join(staged[:count])
            # Only what was joined: a write staged meanwhile waits its turn.
            del staged[:count]
            self._staged_chars = 0
            self._take(text)

    def _take(self, text: str) -> None:
        """Puts a piece in the head while it fits, what of it does not in the
        tail (the head is then closed)."""
        nbytes = utf8_len(text)
        self._written += nbytes
        room = self._head_room
        if room is None:
            self._tail.add(text, nbytes)
            return
        if nbytes <= room:
            self._head.append(text)
            self._head_room = room - nbytes
            return
        self._head_room = None
        first = _prefix(text, room)
        self._head.append(first)
        self._tail.add(text, nbytes - utf8_len(first), start=len(first))

    def _note(self, dropped: int) -> str:
        head, tail = _size(self._head_bytes), _size(self._tail.keep)
        if not self._tail.keep:
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


class _Tail:
    """The last :attr:`keep` bytes of the pieces it is given, and up to one
    piece more: whole pieces go from the front while the rest still holds
    ``keep`` bytes; :meth:`text` makes the last cut, between characters."""

    __slots__ = ("_nbytes", "_pieces", "keep")

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._pieces: deque[tuple[str, int]] = deque()
        self._nbytes = 0

    def add(self, text: str, nbytes: int, start: int = 0) -> None:
        """Adds ``text[start:]``, ``nbytes`` long, without copying more of it
        than it keeps."""
        pieces = self._pieces
        if nbytes >= self.keep:
            # This piece alone fills the tail: what the tail held goes.
            pieces.clear()
            self._nbytes = 0
            text = _suffix(text, self.keep, start)
            nbytes = utf8_len(text)
        elif start:
            text = text[start:]
        pieces.append((text, nbytes))
        self._nbytes += nbytes
        while len(pieces) > 1 and self._nbytes - pieces[0][1] >= self.keep:
            self._nbytes -= pieces.popleft()[1]

    def text(self) -> str:
        return _suffix("".join(piece for piece, _ in self._pieces), self.keep)


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
