"""What gateways leave on the machine, read from ``/proc`` and ``/dev/shm``.

Helpers for the fault, shutdown, soak and memory tests: whether a process
is alive, this test process's descendants and open fds, the shared-memory
segments a process maps (sealed memfds, named ``memfd:mysticchallenge-rings``
in ``/proc/<pid>/maps``; see ``src/transport/shm/mapping.rs``), a process's
memory (``/proc/<pid>/status``), what is in ``/dev/shm``, and polling until
something holds.
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Callable

SHM_DIR = pathlib.Path("/dev/shm")
# The label of the gateway's segments, as /proc/<pid>/maps shows them.
RING_MEMFD = "memfd:mysticchallenge-rings"


def process_state(pid: int) -> str | None:
    """The state letter of ``/proc/<pid>/stat`` (``R``, ``S``, ``T``, ``Z``...),
    or None when there is no such process."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may hold spaces: split after it.
    return stat.rpartition(")")[2].split()[0]


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped yet, does not)."""
    return process_state(pid) not in (None, "Z", "X")


def _parent_of(pid: int) -> int | None:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rpartition(")")[2].split()
    return int(fields[1]) if fields[0] not in ("Z", "X") else None


def descendants(pid: int | None = None) -> set[int]:
    """Living processes below ``pid`` (default: this process), at any depth."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent_of(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found: set[int] = set()
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def open_fds() -> set[str]:
    """This process's open file descriptors, each as ``"fd -> target"``."""
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.add(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except FileNotFoundError:  # the fd listdir itself used
            pass
    return fds


def ring_segments(pid: int) -> set[int]:
    """The shared-memory segments process ``pid`` maps, by inode (empty for a
    process that is gone, or whose maps we may not read)."""
    try:
        maps = pathlib.Path(f"/proc/{pid}/maps").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return set()
    return {
        int(fields[4])
        for fields in (line.split(maxsplit=5) for line in maps.splitlines())
        if len(fields) == 6 and RING_MEMFD in fields[5]
    }


def shm_entries() -> set[str]:
    """What is in ``/dev/shm`` now."""
    return {path.name for path in SHM_DIR.iterdir()}


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``...)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Polls ``predicate`` until it holds; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout}s waiting for {what}")
        time.sleep(0.05)
