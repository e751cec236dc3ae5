"""The worker's functions by digest: each request names its function by the
digest of its pickle and carries the pickle only when the gateway thinks
this worker has not seen it (see ``mystic_wire/_codec.py``).

Bounded least-recently-used: at most ``MAX_FUNCTIONS`` functions, whose
pickles total at most ``MAX_PICKLED_BYTES``; the least recently called goes
first. An evicted function costs one round trip (a miss, answered by the
gateway with the function attached), never a failed call.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

# The gateway remembers what it sent each worker for as many functions
# (`KNOWN_PER_WORKER` in src/functions.rs); past either bound it only costs
# a miss.
MAX_FUNCTIONS = 256
MAX_PICKLED_BYTES = 64 << 20


class FunctionCache:
    """Unpickled functions by digest, least recently used evicted first."""

    def __init__(
        self, max_functions: int = MAX_FUNCTIONS, max_bytes: int = MAX_PICKLED_BYTES
    ) -> None:
        self._entries: OrderedDict[bytes, tuple[Any, int]] = OrderedDict()
        self._max_functions = max_functions
        self._max_bytes = max_bytes
        self._bytes = 0

    def get(self, digest: bytes) -> Any | None:
        """The function with ``digest`` (now the most recently used), or None."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        self._entries.move_to_end(digest)
        return entry[0]

    def put(self, digest: bytes, function: Any, size: int) -> bool:
        """Keeps ``function`` (whose pickle is ``size`` bytes) under ``digest``,
        evicting the least recently used past the bounds; whether it was
        kept (a function larger than the whole byte bound is not)."""
        old = self._entries.pop(digest, None)
        if old is not None:
            self._bytes -= old[1]
        if size > self._max_bytes:
            return False
        self._entries[digest] = (function, size)
        self._bytes += size
        while len(self._entries) > self._max_functions or self._bytes > self._max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= evicted
        return True

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, digest: object) -> bool:
        return digest in self._entries
