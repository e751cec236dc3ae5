"""The template: one process that imports the worker once and forks workers.

The gateway runs ``<python> -m worker_shim --template [--preload M,...]``
with a Unix stream socket as stdin, its control channel. The
template imports everything a worker needs, then the ``--preload`` modules,
freezes what it holds against the cycle collector (so that the pages stay
shared with every worker, copy-on-write), and says ``ready``. Then, for each
message ``fork <request> <index> <arg>...`` with three file descriptors
attached (the worker's fds 0 to 2: its link, stdout and stderr), it forks a middle process
and goes on to the next request; the middle forks the worker, answers
``forked <request> <pid>`` (or ``error <request> <reason>``) and exits, so
the worker is re-parented to the gateway (a child subreaper), which waits for
it, signals its process group and reads its exit status itself, as for a
worker it started directly. Requests are answered as their middles finish,
in any order.

Messages are lines, their fields separated by a tab:

- template -> gateway: ``ready``; ``preload-failed <module> <reason>`` (then
  it exits with status 3); ``forked <request> <pid>``; ``error <request>
  <reason>``.
- gateway -> template: ``fork <request> <index> <worker argument>...``.

EOF on the control channel ends the template (status 0). A failure in one
fork is answered with ``error`` and the template serves on.
"""

from __future__ import annotations

import gc
import importlib
import os
import signal
import socket
import sys
import time

from . import _parent

PRELOAD_FAILED = 3
MAX_MESSAGE = 64 * 1024
# A worker's link, stdout and stderr: its fds 0 to 2.
WORKER_FDS = 3
#: How long a new worker waits to be re-parented to the gateway.
REPARENT_LIMIT = 2.0


class _Worker(Exception):
    """Raised in a forked worker to leave the template's loop with its arguments."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv


def main(preload: list[str]) -> int | list[str]:
    """Runs the template. Returns its exit status, or, in a forked worker,
    the worker's command-line arguments (the caller then runs the worker)."""
    _parent.die_with_parent()
    control = socket.socket(fileno=os.dup(0))
    control.setblocking(True)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        _import_worker()
        failed = import_all(preload)
        if failed is not None:
            _send(control, "preload-failed", *failed)
            return PRELOAD_FAILED
        # Whatever the imports left for the cycle collector goes to a
        # generation it never scans: its pages stay shared with the workers.
        gc.collect()
        gc.freeze()
        # Middle processes are reaped by the kernel as they exit.
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        _send(control, "ready")
        return _serve(control)
    except _Worker as worker:
        return worker.argv
    finally:
        control.close()


def import_all(modules: list[str]) -> tuple[str, str] | None:
    """Imports ``modules`` in order; the first that fails, and why, or None."""
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            return name, _describe(exc)
    return None


def _import_worker() -> None:
    """Everything a worker imports, so that a forked one imports nothing."""
    import mystic_native  # noqa: F401

    from . import _executor, _loop, _stdio  # noqa: F401


def _receive(control: socket.socket) -> tuple[bytes, list[int]]:
    """The next request line (empty at EOF) and the descriptors it brought."""
    message, fds, _flags, _addr = socket.recv_fds(control, MAX_MESSAGE, WORKER_FDS)
    while message and not message.endswith(b"\n"):
        if len(message) > MAX_MESSAGE:
            raise OSError("a request longer than any the gateway sends")
        more = control.recv(MAX_MESSAGE)
        if not more:
            break
        message += more
    return message.rstrip(b"\n"), fds


def _serve(control: socket.socket) -> int:
    while True:
        try:
            message, fds = _receive(control)
        except OSError as exc:
            print(f"worker_shim template: the control channel failed: {exc}", file=sys.stderr)
            return 1
        if not message:
            return 0
        fields = message.decode(errors="replace").split("\t")
        request = fields[1] if len(fields) > 1 else "?"
        try:
            if fields[0] != "fork" or len(fields) < 3 or len(fds) != WORKER_FDS:
                _send(control, "error", request, f"unexpected message {message[:80]!r}")
                continue
            _fork(control, request, int(fields[2]), fields[3:], fds)
        except _Worker:
            raise
        except Exception as exc:
            _send(control, "error", request, _describe(exc))
        finally:
            for fd in fds:
                _close(fd)


def _fork(
    control: socket.socket, request: str, index: int, argv: list[str], fds: list[int]
) -> None:
    """Forks the worker of slot ``index`` through a middle process, which
    answers ``request``; the template goes on to the next request at once."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if os.fork() == 0:
        _middle(control, request, index, argv, fds)


def _middle(
    control: socket.socket, request: str, index: int, argv: list[str], fds: list[int]
) -> None:
    """The middle process: forks the worker, reports its pid, exits. Only the
    worker returns from here, by raising :class:`_Worker`."""
    try:
        # The worker's children are its own to wait for.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        worker = os.fork()
    except BaseException as exc:
        try:
            _send(control, "error", request, _describe(exc))
        finally:
            os._exit(1)
    if worker != 0:
        try:
            # Its own group before anyone hears of it, so that the gateway
            # can signal the group at once (the worker does the same).
            try:
                os.setpgid(worker, worker)
            except OSError:
                pass
            _send(control, "forked", request, str(worker))
        finally:
            os._exit(0)
    try:
        _become_worker(control, index, fds)
    except BaseException as exc:
        print(f"worker_shim: a forked worker could not start: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    raise _Worker(argv)


def _become_worker(control: socket.socket, index: int, fds: list[int]) -> None:
    """In the new worker: its own process group, its stdio, its slot index, and
    its life tied to the gateway's once the middle process has gone."""
    os.setpgid(0, 0)
    control.close()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        _close(fd)
    fds.clear()  # the template's loop must not close them again
    os.environ["MYSTIC_WORKER_INDEX"] = str(index)
    gateway = int(os.environ.get(_parent.GATEWAY_PID_ENV, "0"))
    deadline = time.monotonic() + REPARENT_LIMIT
    while os.getppid() != gateway and time.monotonic() < deadline:
        time.sleep(0.0002)
    if os.getppid() != gateway:
        raise RuntimeError(
            f"not re-parented to the gateway (pid {gateway}) within {REPARENT_LIMIT}s"
        )
    _reseed()


def _reseed() -> None:
    """Gives the worker its own random state: ``random`` reseeds itself after
    a fork, numpy's global generator does not."""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


def _send(control: socket.socket, *fields: str) -> None:
    # One short line in one send: middles write to the channel concurrently,
    # and a stream socket keeps each such write whole.
    control.sendall(("\t".join(fields) + "\n").encode())


def _describe(exc: BaseException) -> str:
    """An exception as one field of one line."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
