"""``Executor``: the gateway's workers as a ``concurrent.futures.Executor``.

It is a face over the client's own calls, not a second client: each
``submit`` is a ``Call`` of a ``RemoteFunction`` (one per callable, captured
at its first submit as ``@compute_this()`` captures), run by
``Call.async_run`` on the executor's event loop, in a thread of its own (so
the request builder, the retries, the shared memory and the error table are
those of ``.run()``); each ``map`` is one ``ExecuteStream`` driven by
``_mapping.aiterate`` on the same loop.

A future's states:

- PENDING from ``submit`` until its outcome comes: first waiting in the
  executor, then, once fewer than ``max_in_flight`` calls are out, sent (in
  the gateway's queue, or running on a worker). It never shows RUNNING: the
  client does not hear when a worker takes a call.
- ``cancel()`` succeeds while the future is pending. A call not yet sent is
  never sent. A sent one is withdrawn (its gRPC call is cancelled): if no
  worker had taken it, the gateway forgets it and it never runs; if a worker
  had, it runs to its end there and its outcome is dropped.
- FINISHED: its result, or what it raised (the function's own exception with
  its type and remote traceback, or the client's ``DistributeError`` for a
  failure of the system).

Callbacks of a future run on the executor's thread, as a pool's run on its
workers' threads: a callback that blocks holds up every call's outcome.
"""

from __future__ import annotations

import concurrent.futures
import functools
import queue
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from mystic_wire import DistributeError

if TYPE_CHECKING:
    import asyncio

from . import _gateways, _mapping
from ._api import Call, DepModule, RemoteFunction, make_settings

# Calls sent at once by default, per worker of the gateway: one running and
# the next ones waiting in its queue, so that no worker waits for a round trip.
IN_FLIGHT_PER_WORKER = 4
# Callables whose capture an executor keeps (each sent by digest once known).
FUNCTIONS_KEPT = 256


class Executor(concurrent.futures.Executor):
    """Runs calls on a mysticchallenge gateway's workers, as a
    ``concurrent.futures.Executor``::

        with Executor("grpc://127.0.0.1:8000") as executor:
            future = executor.submit(pow, 2, 10)
            squares = list(executor.map(lambda x: x * x, range(100)))

    Args:
        server, token, timeout, depmodules: as for ``compute_this``
            (``timeout`` bounds each call).
        max_in_flight: calls of ``submit`` sent and not yet answered, at
            most (the others wait in the executor, pending and cancellable);
            default ``IN_FLIGHT_PER_WORKER`` per worker of the gateway (asked
            at the first ``submit``). Given, it is each ``map``'s window too
            (by default the gateway's suggestion).

    A callable is captured (pickled, by value where ``@compute_this()``
    would) at its first submit to this executor, with the globals it uses
    and what it closes over as they are then; later submits of the same
    object send its digest. Arguments are pickled when the call is sent.
    See the module doc for a future's states and what ``cancel()`` does.
    """

    def __init__(
        self,
        server: str | None = None,
        *,
        token: str | None = None,
        timeout: float | None = None,
        depmodules: Iterable[DepModule] | DepModule = (),
        max_in_flight: int | None = None,
    ) -> None:
        self._settings = make_settings(server, depmodules, timeout, token)
        if max_in_flight is not None and (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or max_in_flight < 1
        ):
            raise ValueError(
                f"max_in_flight must be a positive number of calls, not {max_in_flight!r}"
            )
        self._in_flight = max_in_flight
        self._map_settings = _mapping.Settings(window=max_in_flight)
        self._lock = threading.Lock()
        # Under the lock:
        self._closed = False
        self._remotes: OrderedDict[int, tuple[Callable[..., Any], RemoteFunction]] = OrderedDict()
        self._waiting: deque[tuple[concurrent.futures.Future, Call]] = deque()
        self._sent: dict[concurrent.futures.Future, asyncio.Task] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # On the loop's thread only:
        self._maps: set[asyncio.Task] = set()
        self._closing = False

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future:
        """Schedules ``fn(*args, **kwargs)`` on a worker; returns its
        ``concurrent.futures.Future``."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.add_done_callback(self._settled)
        with self._lock:
            loop = self._open()
            call = self._remote(fn)(*args, **kwargs)
            if self._in_flight is None:
                self._in_flight = self._default_in_flight()
            self._waiting.append((future, call))
        loop.call_soon_threadsafe(self._send)
        return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """``fn`` over the items of ``iterables`` (zipped), as the standard
        library's: the iterables are read now and the calls start now (over
        one stream, several calls per message, so ``chunksize`` changes
        nothing), results come in order, a call's exception is raised at its
        place, and ``TimeoutError`` when a result is not there ``timeout``
        seconds after this call. Leaving the loop early cancels the calls
        that have not started (the gateway forgets them)."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        deadline = None if timeout is None else time.monotonic() + timeout
        calls = [(args, {}) for args in zip(*iterables, strict=False)]  # the shortest, as map()
        stream = _Stream()
        with self._lock:
            loop = self._open()
            remote = self._remote(fn)
        if calls:
            loop.call_soon_threadsafe(self._start_map, stream, remote, calls)
        return _results(stream, len(calls), deadline, loop)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls; with ``wait``, returns once every future is done.
        ``cancel_futures`` cancels every future still pending (sent ones
        too, as ``cancel()`` does) and ends the maps' streams (their
        undelivered results raise ``CancelledError``)."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            pending = []
            if cancel_futures:
                pending = [future for future, _ in self._waiting] + list(self._sent)
                self._waiting.clear()
        for future in pending:
            future.cancel()
        if loop is None:
            return
        _call_soon(loop, self._close, cancel_futures)
        if wait and thread is not threading.current_thread():
            thread.join()

    def get_workers(self) -> int:
        """The number of workers of every gateway that answers."""
        return _gateways.count_workers(self._settings.gateways())

    # -- in the caller's thread, under the lock ----------------------------------

    def _open(self) -> asyncio.AbstractEventLoop:
        """The running loop (started at the first call); refuses after shutdown."""
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if self._loop is None:
            import asyncio  # with the first call: see _api._sleep

            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=_serve, args=(loop,), name="distribute_challenge executor", daemon=True
            )
            thread.start()
            self._loop, self._thread = loop, thread
            # Dropped without shutdown (nothing in flight refers to it then).
            weakref.finalize(self, _call_soon, loop, loop.stop)
        return self._loop

    def _remote(self, fn: Callable[..., Any]) -> RemoteFunction:
        """``fn`` as a remote function, the same one for the same object."""
        kept = self._remotes.get(id(fn))
        if kept is not None and kept[0] is fn:
            self._remotes.move_to_end(id(fn))
            return kept[1]
        if not callable(fn):
            raise TypeError(f"submit and map take a callable, not {fn!r}")
        remote = RemoteFunction(fn, self._settings)
        self._remotes[id(fn)] = (fn, remote)  # holds fn: its id is not reused meanwhile
        if len(self._remotes) > FUNCTIONS_KEPT:
            self._remotes.popitem(last=False)
        return remote

    def _default_in_flight(self) -> int | None:
        """``IN_FLIGHT_PER_WORKER`` per worker; None while no gateway answers
        (its calls will say so; asked again at the next submit)."""
        try:
            return IN_FLIGHT_PER_WORKER * max(self.get_workers(), 1)
        except DistributeError:
            return None

    # -- in any thread ------------------------------------------------------------

    def _settled(self, future: concurrent.futures.Future) -> None:
        """A future's done callback: a cancelled one wakes ``wait`` and
        ``as_completed`` now, and its call is withdrawn if it was sent."""
        if future.cancelled():
            future.set_running_or_notify_cancel()
            _call_soon(self._loop, self._withdraw, future)

    # -- on the loop's thread -----------------------------------------------------

    def _send(self) -> None:
        """Sends waiting calls while fewer than ``max_in_flight`` are out."""
        while True:
            with self._lock:
                limit = self._in_flight or IN_FLIGHT_PER_WORKER
                if not self._waiting or len(self._sent) >= limit:
                    break
                future, call = self._waiting.popleft()
                if future.cancelled():
                    continue
                task = self._loop.create_task(call.async_run())
                self._sent[future] = task
            task.add_done_callback(functools.partial(self._answered, future))
        self._stop_when_idle()

    def _answered(self, future: concurrent.futures.Future, task: asyncio.Task) -> None:
        with self._lock:
            del self._sent[future]
        if task.cancelled():
            future.cancel()
        else:
            error = task.exception()
            try:
                if error is None:
                    future.set_result(task.result())
                else:
                    future.set_exception(error)
            except concurrent.futures.InvalidStateError:
                pass  # cancelled meanwhile: the outcome is dropped
        self._send()

    def _withdraw(self, future: concurrent.futures.Future) -> None:
        task = self._sent.get(future)
        if task is not None:
            task.cancel()

    def _start_map(self, stream: _Stream, remote: RemoteFunction, calls: list) -> None:
        stream.task = self._loop.create_task(self._drive(stream, remote, calls))
        self._maps.add(stream.task)
        stream.task.add_done_callback(functools.partial(self._map_done, stream))

    async def _drive(self, stream: _Stream, remote: RemoteFunction, calls: list) -> None:
        """Runs one map's stream, handing each outcome to its caller's thread."""
        put = stream.outcomes.put
        try:
            async for value in remote._astream(iter(calls), self._map_settings, len(calls)):
                put((True, value))
                del value  # handed over: not kept while the stream waits
        except Exception as exc:
            put((False, exc))

    def _map_done(self, stream: _Stream, task: asyncio.Task) -> None:
        if task.cancelled():  # perhaps before it started
            stream.outcomes.put((False, concurrent.futures.CancelledError()))
        self._maps.discard(task)
        self._stop_when_idle()

    def _close(self, cancel_maps: bool) -> None:
        self._closing = True
        if cancel_maps:
            for task in self._maps:
                task.cancel()
        self._stop_when_idle()

    def _stop_when_idle(self) -> None:
        if self._closing and not (self._waiting or self._sent or self._maps):
            self._loop.stop()


class _Stream:
    """One map's outcomes, from the loop to the caller, in order."""

    def __init__(self) -> None:
        self.outcomes: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self.task: asyncio.Task | None = None

    def next(self, deadline: float | None) -> Any:
        try:
            if deadline is None:
                ok, value = self.outcomes.get()
            else:
                ok, value = self.outcomes.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            raise TimeoutError from None
        if not ok:
            raise value
        return value

    def cancel(self) -> None:  # on the loop's thread
        if self.task is not None:
            self.task.cancel()


def _results(
    stream: _Stream, count: int, deadline: float | None, loop: asyncio.AbstractEventLoop
) -> Iterator[Any]:
    """A map's results; leaving early cancels its stream."""
    try:
        for _ in range(count):
            yield stream.next(deadline)  # not bound to a name: not kept once yielded
    finally:
        _call_soon(loop, stream.cancel)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """The executor's thread: its loop, until stopped; then what is left on
    it is cancelled and the loop closed, as ``asyncio.run`` does."""
    import asyncio

    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def _call_soon(loop: asyncio.AbstractEventLoop | None, callback: Callable, *args: Any) -> None:
    """``callback(*args)`` on ``loop``'s thread, unless the loop has closed."""
    if loop is None:
        return
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass  # closed: nothing left to do there
