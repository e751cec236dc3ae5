"""Tie the worker's life to the gateway's.

On Linux the worker asks the kernel for SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG, SIGKILL)``). The gateway passes its pid in
``$MYSTIC_GATEWAY_PID``: if the parent is already someone else once the
request is in place, the gateway died before it, and the worker exits.
Elsewhere this is a no-op (EOF on the protocol stream still ends the worker).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
GATEWAY_PID_ENV = "MYSTIC_GATEWAY_PID"


@functools.cache
def _libc() -> ctypes.CDLL:
    # Found once: a worker forked by the template inherits it.
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def die_with_parent() -> None:
    """Arranges SIGKILL on parent death; exits if the gateway is already gone."""
    if not sys.platform.startswith("linux"):
        return
    if _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        print(f"worker_shim: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}", file=sys.stderr)
    expected = os.environ.get(GATEWAY_PID_ENV)
    if expected and expected.isdigit() and os.getppid() != int(expected):
        print("worker_shim: the gateway that started this worker is gone; exiting", file=sys.stderr)
        sys.exit(1)
