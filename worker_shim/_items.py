"""A call that streams its items: the worker's side of ``MCS1``, ``MCN1`` and
``MCX1`` (see ``mystic_wire/_codec.py``).

The worker holds at most one such call (:class:`ItemStream`): its iterator,
advanced only when the gateway asks for the next chunk, so a caller that
reads slowly pauses the function between chunks. A chunk holds the items
that come quickly: items are taken while the chunk is younger than
``CHUNK_SECONDS``, holds fewer than ``MAX_ITEMS`` and roughly fewer than
``MAX_BYTES``, and the last item took under ``SLOW_ITEM_SECONDS`` to come;
so a fast generator travels in few messages and a slow one item by item.

What the function prints is captured per chunk, each chunk's bounded as a
call's is (``_output.py``): what it printed before its first item comes
with the first chunk.

The iterator's end (exhausted, or what it raised) is answered as a response
on the request after the chunk that holds its last items; closing it
(``MCX1``: the caller went away) runs the generator's ``finally``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from mystic_wire import ERROR, OK, RAISED, Buffer, SerializationError, encode_chunk

from . import _output
from ._output import BoundedText

CHUNK_SECONDS = 0.002
SLOW_ITEM_SECONDS = 0.0005
MAX_ITEMS = 1024
MAX_BYTES = 1 << 20

Encode = Callable[[str, Any, str, str], list[Buffer]]


class ItemStream:
    """The iterator of the call being streamed, what it printed that has not
    been sent yet, and how it ended."""

    def __init__(self, iterator: Iterator[Any], stdout: BoundedText, stderr: BoundedText) -> None:
        self._iterator = iterator
        # What the call printed until it returned the iterator.
        self._stdout, self._stderr = stdout, stderr
        self._end: tuple[str, Any] | None = None
        self.over = False

    def next(self, encode: Encode) -> list[Buffer]:
        """The next chunk of items; or, once there are none, the end as a
        response made by ``encode`` (then :attr:`over` is set)."""
        if self._end is None:
            items = self._fill()
            if items:
                try:
                    chunk = encode_chunk(items, *self._printed())
                except SerializationError as exc:
                    self._end = (
                        ERROR,
                        f"an item could not be pickled: {exc}. Yield plain data (no locks, "
                        "open files, sockets or generators).",
                    )
                    self._close()
                else:
                    self._reset_printed()
                    return chunk
        self.over = True
        kind, value = self._end or (OK, None)
        return encode(kind, value, *self._printed())

    def close(self, encode: Encode) -> list[Buffer]:
        """Closes the iterator (a generator's ``finally`` runs) and answers with
        what that gave: ``"ok"``, or what it raised."""
        self.over = True
        raised = self._close() if self._end is None else None
        kind, value = (RAISED, raised) if raised is not None else (OK, None)
        return encode(kind, value, *self._printed())

    def _fill(self) -> list[Any]:
        items: list[Any] = []
        iterator, clock, size = self._iterator, time.perf_counter, 0
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self._stdout, self._stderr
        try:
            started = last = clock()
            while True:
                try:
                    item = next(iterator)
                except StopIteration:
                    self._end = (OK, None)
                    return items
                except BaseException as exc:
                    if exc.__traceback__ is not None:
                        exc.__traceback__ = exc.__traceback__.tb_next  # drop this frame
                    self._end = (RAISED, exc)
                    return items
                items.append(item)
                size += _size(item)
                now = clock()
                if (
                    now - started >= CHUNK_SECONDS
                    or now - last >= SLOW_ITEM_SECONDS
                    or len(items) >= MAX_ITEMS
                    or size >= MAX_BYTES
                ):
                    return items
                last = now
        finally:
            sys.stdout, sys.stderr = saved

    def _close(self) -> BaseException | None:
        """Closes the iterator, if it can be; returns what that raised."""
        close = getattr(self._iterator, "close", None)
        if close is None:
            return None
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self._stdout, self._stderr
        try:
            close()
        except BaseException as exc:
            return exc
        finally:
            sys.stdout, sys.stderr = saved
        return None

    def _printed(self) -> tuple[str, str]:
        return self._stdout.getvalue(), self._stderr.getvalue()

    def _reset_printed(self) -> None:
        self._stdout, self._stderr = _output.capture("stdout"), _output.capture("stderr")


def _size(item: Any) -> int:
    """Roughly how many bytes ``item`` pickles to."""
    nbytes = getattr(item, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(item, bytes | bytearray | str):
        return len(item)
    return sys.getsizeof(item)
