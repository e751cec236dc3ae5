"""The client's connections, cached so that calls share them, and how calls
made from asyncio finish on its loop.

- One ``mystic_native.Client`` per target per process (:func:`client`), with
  one HTTP/2 connection per gateway for blocking calls (driven by the
  threads that wait on them) and one for calls from asyncio and streams
  (on the client's runtime thread), shared by every loop and across
  ``asyncio.run`` calls. A process made by ``fork`` does not reuse its parent's client (the
  cache remembers the pid that made each; the parent's connections and the
  threads behind them stayed in the parent).
- One ``Completions`` per running loop (:func:`run_on_loop`): a call made from
  asyncio runs in Rust and its outcome lands in a queue whose eventfd the
  loop watches; calls that finish together are handed out in one wake-up of
  the loop. Cancelling the awaiting task cancels the call.

A balanced target (a list of gateways or a DNS name, see ``_target.py``) is
spread as gRPC's ``round_robin`` does: each call goes to the next gateway;
one that cannot be reached is passed over for a while (1 s, doubling to at
most 5 s) and used again once it answers; a DNS name is resolved again when
a dial fails. Calls running on a gateway that goes away fail with
``UNAVAILABLE``.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mystic_native import Client, Completions

from . import _process
from ._target import Target

if TYPE_CHECKING:
    # asyncio is imported by whoever runs a loop; importing it here would
    # cost every `import distribute_challenge` a quarter of its time.
    import asyncio

_lock = threading.Lock()
_clients: dict[Target, tuple[int, Client]] = {}
_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopCalls] = (
    weakref.WeakKeyDictionary()
)
_tokens = itertools.count(1)


def client(target: Target) -> Client:
    """The client of ``target`` in this process."""
    pid = _process.pid()
    cached = _clients.get(target)
    if cached is not None and cached[0] == pid:
        return cached[1]
    with _lock:
        cached = _clients.get(target)
        if cached is not None and cached[0] == pid:
            return cached[1]
        made = _make(target)
        _clients[target] = (pid, made)
        return made


def _make(target: Target) -> Client:
    if target.is_dns:
        places: list[str] = []
        dns = target.authority
    elif target.is_unix:
        places = [f"unix:{path}" for path in target.gateways] or [target.address]
        dns = None
    else:
        places = list(target.gateways) or [target.address]
        dns = None
    return Client(
        places, dns=dns, tls=target.tls, ca_pem=_ca_pem(target), authority=target.authority
    )


def _ca_pem(target: Target) -> bytes | None:
    if not target.ca_file:
        return None
    try:
        with open(target.ca_file, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ValueError(
            f"cannot read the CA file {target.ca_file!r} named by $DISTRIBUTE_CA_FILE: "
            f"{exc.strerror}; point it at a PEM file or unset it to trust the system roots"
        ) from exc


async def run_on_loop(start: Callable[..., None], *args: Any) -> Any:
    """Starts a call with ``start(completions, token, *args)`` (a method of the
    extension's ``Client`` or ``Stream`` whose name ends in ``_async``) and
    awaits its outcome on the running loop; cancelling the awaiting task
    cancels the call."""
    import asyncio

    loop = asyncio.get_running_loop()
    calls = _loop_calls(loop)
    token = next(_tokens)
    future = loop.create_future()
    calls.waiting[token] = future
    try:
        start(calls.completions, token, *args)
        return await future
    except BaseException:
        if calls.waiting.pop(token, None) is not None:
            calls.completions.cancel(token)
        raise


class _LoopCalls:
    """The calls of one loop: their completion queue and their futures."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.pid = _process.pid()
        self.completions = Completions()
        self.waiting: dict[int, asyncio.Future] = {}
        loop.add_reader(self.completions.fileno(), self._drain)

    def _drain(self) -> None:
        for token, ok, value in self.completions.drain():
            future = self.waiting.pop(token, None)
            if future is None or future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


def _loop_calls(loop: asyncio.AbstractEventLoop) -> _LoopCalls:
    calls = _loops.get(loop)
    if calls is None or calls.pid != _process.pid():
        calls = _loops[loop] = _LoopCalls(loop)
    return calls
