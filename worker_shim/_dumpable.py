"""Closes the worker to the other processes of its user.

Every process the gateway runs (the gateway, the template, each worker)
runs as one user, and a process of a user may open the descriptors and
memory of the others (``/proc/<pid>/fd``, ``/proc/<pid>/mem``) and attach to
them. A process that is not *dumpable* (``prctl(PR_SET_DUMPABLE, 0)``) is
closed to that: only root, or a holder of ``CAP_SYS_PTRACE``, gets in, so a
function cannot reach its siblings' rings, segments or calls. It costs core
dumps, and attaching a debugger or profiler as the same user; the gateway's
``--debuggable`` leaves everything as it was.

The template and a worker started on its own make themselves so before any
user code runs (``--preload`` modules are user code); a forked worker is so
from its first instruction, as the flag is inherited across ``fork``.
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_DUMPABLE = 4


def make_undumpable() -> None:
    """Makes this process not dumpable; exits with a message if it cannot."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        reason = os.strerror(ctypes.get_errno())
        print(f"worker_shim: prctl(PR_SET_DUMPABLE, 0) failed: {reason}", file=sys.stderr)
        sys.exit(1)
