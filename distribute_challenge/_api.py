"""The public API: the ``compute_this`` decorator, the remote function it makes,
and the call object whose ``run()`` and ``async_run()`` are twins over one
request builder (``_Prepared``), one retry policy (``_retry.BusyRetry``: a call
refused because the gateway's queue is full is sent again) and one response
handler (``_outcome.finish``).

A remote function is pickled once, at its first call (``_Capture``): with
what it closes over and the globals it uses as they are then. Its first call
carries it attached; after that calls name it by digest, and a gateway that
does not know the digest (it restarted, evicted it, or is another gateway
of a list) refuses the call with ``function-unknown``, which is sent again
at once with the function attached, as are the next calls, one per gateway.

A call to a gateway on this host whose arguments hold large buffers (or
whose pickle is large) travels through shared memory (``_segmented.py``),
its result too; a call whose segment the gateway no longer holds is sent
again inline, as is every call when shared memory cannot be used.
"""

from __future__ import annotations

import functools
import threading
import time
import types
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

from mystic_native import CallFailed, Client
from mystic_wire import (
    Function,
    attach,
    describe_depmodules,
    encode_call,
    encode_function,
)
from mystic_wire._segments import is_segment_response

from . import _client, _gateways, _mapping, _retry, _segment_door, _token
from ._by_value import pickle_module_by_value_if_needed
from ._outcome import finish
from ._segment_door import Door, DoorError
from ._segmented import SegmentedRequest
from ._status import function_unknown, raise_from_rpc_error, segment_unknown
from ._target import Target, parse_server, resolve_server

DepModule = types.ModuleType | str

# Buffers (and pickles) from this size on travel through shared memory to a
# gateway on this host. Below it a round trip through gRPC costs less than
# setting up a segment (see BENCHMARKS.md).
DEFAULT_SHARED_MEMORY_THRESHOLD = 1 << 20


def compute_this(
    server: str | None = None,
    depmodules: Iterable[DepModule] | DepModule = (),
    timeout: float | None = None,
    token: str | None = None,
    busy_timeout: float = _retry.DEFAULT_BUSY_TIMEOUT,
    insecure_plaintext_token: bool = False,
    shared_memory_threshold: int | None = DEFAULT_SHARED_MEMORY_THRESHOLD,
) -> Callable[[Callable[..., Any]], RemoteFunction]:
    """Makes a function run remotely on the gateway's workers.

    Args:
        server: ``grpc://HOST:PORT``, ``grpcs://HOST:PORT``, ``HOST:PORT``,
            ``unix:PATH``, a comma-separated list of these (one scheme), or
            ``dns:///NAME:PORT``; calls to a list or a name are spread with
            gRPC's ``round_robin`` (see ``_target.py``). Default
            ``$DISTRIBUTE_SERVER``, else ``grpc://127.0.0.1:8000`` (read at each call).
        depmodules: modules (objects or dotted names) that the worker imports
            and binds in the function's globals before each call.
        timeout: seconds each call may take (a gRPC deadline), retries
            included; default none.
        token: sent as ``authorization: Bearer <token>``; default
            ``$DISTRIBUTE_TOKEN``.
        busy_timeout: seconds a call keeps being sent again, with backoff,
            while the gateway refuses it because its queue is full (nothing
            ran); then it raises ``ServerBusy``. 0 never retries.
        insecure_plaintext_token: allow sending the token over plaintext to a
            gateway that is not on this host (refused otherwise; also
            ``$DISTRIBUTE_INSECURE_PLAINTEXT_TOKEN=1``).
        shared_memory_threshold: with a gateway on this host (found by
            itself, nothing to configure), arguments and results holding
            buffers of this many bytes or more (numpy arrays, ``memoryview``,
            anything with ``PickleBuffer``), or whose pickle is that large,
            travel through shared memory instead of gRPC; numpy arrays
            arrive as views over it, without a copy. ``None``: never.

    ``func(*args, **kwargs)`` then returns a call object: ``.run()`` blocks for
    the result, ``await .async_run()`` awaits it.
    """
    if callable(server):  # used bare, as @compute_this
        return compute_this()(server)  # type: ignore[return-value]
    settings = make_settings(
        server,
        depmodules,
        timeout,
        token,
        busy_timeout,
        insecure_plaintext_token,
        shared_memory_threshold,
    )

    def decorate(function: Callable[..., Any]) -> RemoteFunction:
        if not callable(function):
            raise TypeError(f"compute_this decorates functions, not {function!r}")
        return RemoteFunction(function, settings)

    return decorate


def make_settings(
    server: str | None,
    depmodules: Iterable[DepModule] | DepModule,
    timeout: float | None,
    token: str | None,
    busy_timeout: float = _retry.DEFAULT_BUSY_TIMEOUT,
    insecure_plaintext_token: bool = False,
    shared_memory_threshold: int | None = DEFAULT_SHARED_MEMORY_THRESHOLD,
) -> _Settings:
    """``compute_this``'s settings, checked (see it for each); the
    ``Executor`` takes the same."""
    if server is not None:
        parse_server(server)
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if (
        isinstance(busy_timeout, bool)
        or not isinstance(busy_timeout, int | float)
        or not busy_timeout >= 0
    ):
        raise ValueError(
            f"busy_timeout must be a number of seconds (0 or more), not {busy_timeout!r}"
        )
    if shared_memory_threshold is not None and (
        isinstance(shared_memory_threshold, bool)
        or not isinstance(shared_memory_threshold, int)
        or shared_memory_threshold < 1
    ):
        raise ValueError(
            "shared_memory_threshold must be a number of bytes (1 or more) or None, "
            f"not {shared_memory_threshold!r}"
        )
    if isinstance(depmodules, str | types.ModuleType):
        depmodules = (depmodules,)
    depmodules = tuple(depmodules)
    describe_depmodules(None, depmodules)  # refuse bad entries now
    return _Settings(
        server,
        depmodules,
        timeout,
        token,
        busy_timeout,
        insecure_plaintext_token,
        shared_memory_threshold,
    )


@dataclass(frozen=True)
class _Settings:
    server: str | None
    depmodules: tuple[DepModule, ...]
    timeout: float | None
    token: str | None
    busy_timeout: float = _retry.DEFAULT_BUSY_TIMEOUT
    insecure_plaintext_token: bool = False
    shared_memory_threshold: int | None = DEFAULT_SHARED_MEMORY_THRESHOLD

    def target(self) -> Target:
        return resolve_server(self.server)

    def metadata(self, target: Target) -> tuple[tuple[str, str], ...]:
        return _token.authorization(target, self.token, self.insecure_plaintext_token)

    def gateways(self) -> list[_gateways.GatewayWorkers]:
        """Each gateway's ``GetWorkers`` answer, or the error it gave instead."""
        target = self.target()
        return _gateways.survey(target, self.timeout, self.metadata(target))


class RemoteFunction:
    """A function that runs on the gateway's workers. The original function is
    ``__wrapped__``; calling this returns a :class:`Call`."""

    def __init__(self, function: Callable[..., Any], settings: _Settings) -> None:
        functools.update_wrapper(self, function)
        self._settings = settings
        self._capture: _Capture | None = None
        self._capture_lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Call:
        return Call(self, args, kwargs)

    def map(
        self,
        iterable: Iterable[Any],
        /,
        *,
        ordered: bool = True,
        window: int | None = None,
        return_exceptions: bool = False,
        progress: bool = False,
        timeout: float | None = None,
    ) -> Iterator[Any]:
        """Calls the function on each item, over one stream; returns an
        iterator of the results.

        Args:
            ordered: yield results in input order (default), or as they finish.
            window: calls in flight at most (sent, not yet yielded); default
                what the gateway suggests, a few per worker. The input is
                consumed only as far as that, so it may be endless.
            return_exceptions: yield a call's exception instead of raising it.
            progress: show a tqdm progress bar (``pip install tqdm``).
            timeout: seconds the whole map may take; the decorator's
                ``timeout`` bounds each call.

        A call's exception is raised at its place (or when it comes,
        unordered), after the results before it. Leaving the loop early
        cancels the calls that have not started.
        """
        settings = _mapping.check_settings(ordered, window, return_exceptions, progress, timeout)
        return self._stream(_mapping.as_calls(iterable, star=False), settings, _length(iterable))

    def starmap(
        self, iterable: Iterable[Iterable[Any]], /, **options: Unpack[MapOptions]
    ) -> Iterator[Any]:
        """As :meth:`map`, each item being the tuple of a call's arguments."""
        settings = _mapping.check_settings(**_map_options(options))
        return self._stream(_mapping.as_calls(iterable, star=True), settings, _length(iterable))

    def amap(self, iterable: Any, /, **options: Unpack[MapOptions]) -> AsyncIterator[Any]:
        """As :meth:`map`, as an async iterator (``async for``), on the running
        event loop; ``iterable`` may be an async iterable."""
        settings = _mapping.check_settings(**_map_options(options))
        return self._astream(_mapping.as_calls(iterable, star=False), settings, _length(iterable))

    def astarmap(self, iterable: Any, /, **options: Unpack[MapOptions]) -> AsyncIterator[Any]:
        """As :meth:`starmap`, as an async iterator."""
        settings = _mapping.check_settings(**_map_options(options))
        return self._astream(_mapping.as_calls(iterable, star=True), settings, _length(iterable))

    def _stream(
        self, inputs: Any, settings: _mapping.Settings, total: int | None, items: bool = False
    ) -> Iterator[Any]:
        plan = _mapping.plan(self)  # pickled now: a bad function fails here
        return _mapping.iterate(plan, settings, total, items, inputs)

    def _astream(
        self, inputs: Any, settings: _mapping.Settings, total: int | None, items: bool = False
    ) -> AsyncIterator[Any]:
        plan = _mapping.plan(self)
        return _mapping.aiterate(plan, settings, total, items, inputs)

    def _captured(self) -> _Capture:
        """The function as pickled at its first call (see the module doc)."""
        capture = self._capture
        if capture is None:
            with self._capture_lock:
                if self._capture is None:
                    function = self.__wrapped__
                    pickle_module_by_value_if_needed(getattr(function, "__module__", None))
                    self._capture = _Capture(encode_function(function))
                capture = self._capture
        return capture

    def get_workers(self) -> int:
        """The number of workers of every gateway that answers (each asked on
        its own; see :meth:`get_gateways`)."""
        return _gateways.count_workers(self.get_gateways())

    def get_gateways(self) -> list[_gateways.GatewayWorkers]:
        """Each gateway's ``GetWorkers`` answer, or the error it gave instead:
        every entry of a list, every address a DNS name resolves to now."""
        return self._settings.gateways()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickled (e.g. a function that calls itself by name), it becomes the
        # plain function: inside the worker it runs locally.
        return _plain_function, (self.__wrapped__,)

    def __repr__(self) -> str:
        return f"<remote function {self.__wrapped__.__qualname__}>"


def _plain_function(function: Callable[..., Any]) -> Callable[..., Any]:
    return function


class _Capture:
    """A remote function's pickle, and how many calls are still to carry it.

    One at first: once a call that carried it has been answered, calls name
    it by digest. Each time a gateway says it does not hold it, the next
    calls carry it, twice as many as the time before (from one per gateway
    of a list, up to ``MAX_ATTACHED_RUN`` times that): round robin takes
    them to every gateway, and a function that no gateway keeps (larger
    than its cache) costs a refused round trip once in a long run of calls,
    not at every call."""

    MAX_ATTACHED_RUN = 64

    def __init__(self, function: Function) -> None:
        self.function = function
        self._to_attach = 1
        self._run = 1
        # Whether a result has been large: then its small calls, too, ask
        # for results in shared memory.
        self.large = False

    def attach(self) -> bool:
        """Whether the next call carries the function."""
        return self._to_attach > 0

    def delivered(self) -> None:
        """A call that carried it was answered."""
        self._to_attach = max(self._to_attach - 1, 0)

    def unknown(self, target: Target) -> None:
        """A gateway of ``target`` does not hold it."""
        gateways = max(len(target.gateways), 1)
        self._to_attach = max(self._to_attach, gateways * self._run)
        self._run = min(self._run * 2, self.MAX_ATTACHED_RUN)


class _Prepared:
    """One call's request, ready to send, and what sending it needs: the
    request builder shared by both runs, which pickles before anything is
    sent."""

    def __init__(self, call: Call, target: Target, door: Door | None) -> None:
        remote = call._remote
        settings = remote._settings
        self.target = target
        self.capture = remote._captured()
        self.metadata = settings.metadata(target)
        self.retry = _retry.BusyRetry(
            settings.timeout, settings.busy_timeout, others=lambda: _others(target)
        )
        self._args, self._kwargs = call._args, call._kwargs
        self._spec = describe_depmodules(remote.__wrapped__, settings.depmodules)
        self._name = getattr(remote.__wrapped__, "__qualname__", None) or repr(remote.__wrapped__)
        self.segmented: SegmentedRequest | None = None
        self._call: bytes | None = None
        threshold = self._threshold = settings.shared_memory_threshold
        if door is not None and threshold is not None:
            record = (tuple(self._args), dict(self._kwargs), tuple(self._spec))
            try:
                self.segmented = SegmentedRequest(
                    door, self.capture.function.digest, record, threshold, self.capture.large
                )
            except Exception:
                # No memory for a segment: inline. An argument that cannot
                # be pickled: encode_call says so, as for any call.
                pass
            else:
                if self.segmented.inline is not None:
                    self._call, self.segmented = self.segmented.inline, None
        if self.segmented is None:
            self._inline()

    def request(self, attached: bool) -> bytes:
        call = self._call
        if self.segmented is not None:
            try:
                call = self.segmented.payload()
            except DoorError:
                call = self._inline()
        assert call is not None
        return attach(self.capture.function, call) if attached else call

    def failed(self, error: CallFailed) -> bool:
        """An attempt failed with ``error``; whether to send it again at once
        (inline: the gateway no longer holds the call's segment or session)."""
        if self.segmented is None:
            return False
        self.segmented.abandon()
        if not segment_unknown(error):
            return False
        self._inline()
        return True

    def finish(self, payload: bytes) -> Any:
        segmented = self.segmented
        threshold = self._threshold
        if threshold is not None and (len(payload) >= threshold or is_segment_response(payload)):
            self.capture.large = True  # its next small calls ask for results in shared memory
        try:
            if segmented is None:
                return finish(payload)
            return finish(payload, segmented.door, segmented.fd)
        finally:
            self.close()

    def close(self) -> None:
        if self.segmented is not None:
            self.segmented.close()

    def _inline(self) -> bytes:
        """Leaves shared memory for this call (forgetting a door that failed)."""
        if self.segmented is not None:
            door = self.segmented.door
            self.segmented.close()
            self.segmented = None
            if door.broken:
                _segment_door.forget(self.target, door)
        if self._call is None:
            self._call = encode_call(
                self.capture.function.digest, self._args, self._kwargs, self._spec, self._name
            )
        return self._call


class Call:
    """One pending call of a remote function; run it with :meth:`run` or
    :meth:`async_run` (each run is a new remote call)."""

    def __init__(self, remote: RemoteFunction, args: tuple, kwargs: dict) -> None:
        self._remote = remote
        self._args = args
        self._kwargs = kwargs

    def run(self) -> Any:
        """Runs the call and blocks until its result (works inside a running event loop)."""
        target = self._remote._settings.target()
        client = _client.client(target)
        door = self._sync_door(target, client)
        prepared = _Prepared(self, target, door)
        retry = prepared.retry
        attached = prepared.capture.attach()
        try:
            while True:
                try:
                    response = client.execute(
                        prepared.request(attached), prepared.metadata, retry.attempt_timeout()
                    )
                    break
                except CallFailed as exc:
                    if prepared.failed(exc):
                        continue
                    if not attached and function_unknown(exc):
                        prepared.capture.unknown(prepared.target)
                        attached = True
                        continue
                    delay = retry.next_delay(exc)
                    if delay is None:
                        raise_from_rpc_error(exc, prepared.target, retry.summary())
                time.sleep(delay)
        except BaseException:
            prepared.close()
            raise
        if attached:
            prepared.capture.delivered()
        return prepared.finish(response)

    async def async_run(self) -> Any:
        """Runs the call on the running event loop."""
        target = self._remote._settings.target()
        client = _client.client(target)
        door = await self._async_door(target, client)
        prepared = _Prepared(self, target, door)
        retry = prepared.retry
        attached = prepared.capture.attach()
        try:
            while True:
                try:
                    response = await _client.run_on_loop(
                        client.execute_async,
                        prepared.request(attached),
                        prepared.metadata,
                        retry.attempt_timeout(),
                    )
                    break
                except CallFailed as exc:
                    if prepared.failed(exc):
                        continue
                    if not attached and function_unknown(exc):
                        prepared.capture.unknown(prepared.target)
                        attached = True
                        continue
                    delay = retry.next_delay(exc)
                    if delay is None:
                        raise_from_rpc_error(exc, prepared.target, retry.summary())
                await _sleep(delay)
        except BaseException:
            prepared.close()
            raise
        if attached:
            prepared.capture.delivered()
        return prepared.finish(response)

    def _known_door(self, target: Target) -> tuple[bool, Door | None]:
        """Whether ``target``'s door needs no looking for (known, or shared
        memory is off), and the door."""
        if self._remote._settings.shared_memory_threshold is None:
            return True, None
        return _segment_door.cached(target)

    def _sync_door(self, target: Target, client: Client) -> Door | None:
        """The door to ``target``'s gateway, looked for (``GetWorkers``) on first use."""
        known, door = self._known_door(target)
        if known:
            return door
        metadata = self._remote._settings.metadata(target)
        try:
            info = client.get_workers(metadata, _segment_door.DISCOVERY_TIMEOUT)
        except CallFailed:
            info = None
        return _segment_door.remember(target, _gateways.workers_info(info))

    async def _async_door(self, target: Target, client: Client) -> Door | None:
        """As :meth:`_sync_door`, on the running event loop."""
        known, door = self._known_door(target)
        if known:
            return door
        metadata = self._remote._settings.metadata(target)
        try:
            info = await _client.run_on_loop(
                client.get_workers_async, metadata, _segment_door.DISCOVERY_TIMEOUT
            )
        except CallFailed:
            info = None
        return _segment_door.remember(target, _gateways.workers_info(info))

    def _prepare(self) -> _Prepared:
        """The request as it would go inline (no gateway is asked anything)."""
        return _Prepared(self, self._remote._settings.target(), None)

    def stream(self) -> Iterator[Any]:
        """Runs the call and yields the items of the iterator (a generator)
        the function returns, as the worker produces them. The worker makes
        them only as fast as they are read; leaving the loop closes the
        generator in the worker (its ``finally`` runs). What it raises is
        raised after the items before it."""
        inputs = iter([(self._args, self._kwargs)])
        return self._remote._stream(inputs, _ONE_STREAM, None, items=True)

    def astream(self) -> AsyncIterator[Any]:
        """As :meth:`stream`, as an async iterator, on the running event loop."""
        inputs = iter([(self._args, self._kwargs)])
        return self._remote._astream(inputs, _ONE_STREAM, None, items=True)

    def __repr__(self) -> str:
        function = self._remote.__wrapped__
        return f"<call of {getattr(function, '__qualname__', function)!r}>"


_ONE_STREAM = _mapping.Settings(window=1)


class MapOptions(TypedDict, total=False):
    """The options of :meth:`RemoteFunction.map`, which its twins take too."""

    ordered: bool
    window: int | None
    return_exceptions: bool
    progress: bool
    timeout: float | None


def _map_options(options: dict[str, Any]) -> dict[str, Any]:
    """``map``'s keyword options, with their defaults; refuses others."""
    unknown = set(options) - set(MapOptions.__annotations__)
    if unknown:
        raise TypeError(
            f"unexpected keyword arguments {sorted(unknown)}; "
            f"map takes {', '.join(MapOptions.__annotations__)}"
        )
    defaults = {"ordered": True, "window": None, "return_exceptions": False, "progress": False}
    return {**defaults, "timeout": None, **options}


def _length(iterable: Any) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None


def _others(target: Target) -> int:
    """How many other gateways a refused call can be sent to at once."""
    return len(_gateways.members(target)) - 1 if target.balanced else 0


async def _sleep(seconds: float) -> None:
    # asyncio is imported by whoever runs the loop; importing it with this
    # module would cost every `import distribute_challenge` a quarter of its time.
    import asyncio

    await asyncio.sleep(seconds)
