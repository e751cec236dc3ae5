"""Many calls over one ``ExecuteStream``: ``map``, ``starmap`` and their async
twins, and ``Call.stream()`` (a generator's items as they come).

:class:`Calls` is the bookkeeping of one stream, with no I/O: it takes input
items while the window has room, encodes them into messages of several calls
(up to ``BATCH_CALLS`` calls or ``BATCH_BYTES`` of payload, or one larger
call), takes the gateway's results, and hands out what can be delivered (in
input order, or as they come). Two drivers run it, one per world:

- sync (:func:`iterate`): the calls are encoded and the input is consumed in
  the caller's thread, between results (read with the GIL released);
- async (:func:`aiterate`): the same on the running loop, each message of
  results awaited.

Either way messages are handed to the extension's ``Stream``, which sends
them from its own task, so that sending never waits for reading.

Bounds: at most ``window`` calls are in flight (sent and not yet delivered:
in order, a result that waits for an earlier one counts), so the client and
the gateway hold a bounded number of calls for any input length, and the
input is consumed only as far as that. The default window is what the
gateway suggests (its ``mystic-window`` header: a few calls per worker).

Leaving the loop, closing the iterator, cancelling the task, or the
``timeout`` of the whole map passing cancels the stream: the gateway forgets
the calls that have not started (running ones finish on their workers, and
their results are dropped). A call's own failure is raised at its place (in
order) or when it comes; with ``return_exceptions`` it is yielded instead. A
failure of the stream itself (the gateway went away, the deadline) raises
after what was delivered before it, ``return_exceptions`` or not.

The function travels as for unary calls (``_api._Capture``): by digest once a
call that carried it was answered. A call the gateway refuses with
``function-unknown`` is sent again with the function attached; the others
refused with it, by digest again (the gateway keeps a stream's functions once
one brought it), and if one is refused twice, every later call carries it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from mystic_native import CallFailed, Stream
from mystic_wire import DistributeError, attach, describe_depmodules, encode_call

from . import _client, _outcome
from ._status import FUNCTION_UNKNOWN, call_error, raise_from_rpc_error

if TYPE_CHECKING:
    from ._api import RemoteFunction, _Capture
    from ._target import Target

# As the gateway's (src/server/stream.rs): what one message holds at most.
BATCH_BYTES = 64 << 10
BATCH_CALLS = 1024
# When the gateway does not say (an older one, or none answered yet).
DEFAULT_WINDOW = 256
CALL_TIMEOUT_HEADER = "mystic-call-timeout"

Args = tuple[tuple, dict]


class Settings(NamedTuple):
    """One map's options, checked."""

    ordered: bool = True
    window: int | None = None
    return_exceptions: bool = False
    progress: bool = False
    timeout: float | None = None


def check_settings(
    ordered: bool, window: int | None, return_exceptions: bool, progress: bool, timeout: Any
) -> Settings:
    """Refuses bad options before anything is sent."""
    if window is not None and (
        isinstance(window, bool) or not isinstance(window, int) or window < 1
    ):
        raise ValueError(f"window must be a positive number of calls, not {window!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if progress:
        _tqdm()  # a missing tqdm is said now, not at the first result
    return Settings(bool(ordered), window, bool(return_exceptions), bool(progress), timeout)


class _Plan(NamedTuple):
    """What every call of one stream shares."""

    target: Target
    capture: _Capture
    metadata: tuple[tuple[str, str], ...]
    encode: Callable[[tuple, dict], bytes]


def plan(remote: RemoteFunction) -> _Plan:
    """What the calls of a stream of ``remote`` share; pickles the function
    now (at its first use), so that a bad one fails before anything is sent."""
    settings = remote._settings
    target = settings.target()
    capture = remote._captured()
    spec = describe_depmodules(remote.__wrapped__, settings.depmodules)
    name = getattr(remote.__wrapped__, "__qualname__", None) or repr(remote.__wrapped__)
    digest = capture.function.digest
    metadata = settings.metadata(target)
    if settings.timeout is not None:
        metadata += ((CALL_TIMEOUT_HEADER, grpc_timeout(settings.timeout)),)

    def encode(args: tuple, kwargs: dict) -> bytes:
        return encode_call(digest, args, kwargs, spec, name)

    return _Plan(target, capture, metadata, encode)


def grpc_timeout(seconds: float) -> str:
    """``seconds`` in ``grpc-timeout``'s format (at most 8 digits and a unit)."""
    millis = max(1, math.ceil(seconds * 1000))
    if millis < 10**8:
        return f"{millis}m"
    return f"{min(math.ceil(seconds), 10**8 - 1)}S"


# One call of a message: (id, payload, items).
StreamCall = tuple[int, bytes, bool]


class _Pending(NamedTuple):
    call: bytes
    # How often the gateway did not know its function.
    unknown: int


class Calls:
    """The bookkeeping of one stream (see the module doc). With ``items``,
    each call streams its items (``Call.stream()`` sends one such call)."""

    def __init__(self, plan: _Plan, settings: Settings, total: int | None, items: bool) -> None:
        self.plan = plan
        self.settings = settings
        self.window = settings.window or DEFAULT_WINDOW
        self.input_done = False
        self._items = items
        self._ordered = settings.ordered and not items
        self._next_id = 0
        self._next_out = 0
        self._pending: dict[int, _Pending] = {}
        # Outcomes not yet delivered, as (kind, value): by id (in order) or as
        # they came.
        self._done: dict[int, tuple[str, Any]] = {}
        self._ready: deque[tuple[str, Any]] = deque()
        self._outbox: list[StreamCall] = []
        self._outbox_bytes = 0
        self._messages: list[list[StreamCall]] = []
        self._closed_input = False
        # The first call carries the function if the gateway may not hold it:
        # the gateway keeps it for the stream's later calls, sent by digest.
        self._attach_next = plan.capture.attach()
        self._attach_all = False
        self._attached_again = False
        self._carried: set[int] = set()
        self._total_known = total is not None
        self._bar = _progress_bar(total) if settings.progress else None

    def suggest_window(self, window: int | None) -> None:
        """Takes the gateway's suggested window (its ``mystic-window``
        header), unless one was given."""
        if self.settings.window is None and window is not None:
            self.window = max(1, window)

    def room(self) -> int:
        """How many more calls may be sent now."""
        if self._ordered:
            used = self._next_id - self._next_out
        else:
            used = len(self._pending) + len(self._ready)
        return self.window - used

    def add(self, args: tuple, kwargs: dict) -> None:
        """Encodes one call and queues it for the next message."""
        call_id = self._next_id
        self._next_id += 1
        if self._bar is not None and not self._total_known:
            self._bar.total = self._next_id
            self._bar.refresh()
        try:
            call = self.plan.encode(args, kwargs)
        except DistributeError as exc:
            self._finish(call_id, "error", exc)
            return
        self._pending[call_id] = _Pending(call, 0)
        self._send(call_id, call, self._attach_next or self._attach_all)
        self._attach_next = False

    def _send(self, call_id: int, call: bytes, attached: bool) -> None:
        if attached:
            call = attach(self.plan.capture.function, call)
            self._carried.add(call_id)
        if self._outbox and (
            self._outbox_bytes + len(call) > BATCH_BYTES or len(self._outbox) >= BATCH_CALLS
        ):
            self._flush()
        self._outbox.append((call_id, call, self._items))
        self._outbox_bytes += len(call)

    def _flush(self) -> None:
        if self._outbox:
            self._messages.append(self._outbox)
            self._outbox, self._outbox_bytes = [], 0

    def messages(self) -> list[list[StreamCall] | None]:
        """The messages to send now; None last once no more calls will come."""
        self._flush()
        messages: list[list[StreamCall] | None] = list(self._messages)
        self._messages = []
        if self.input_done and not self._closed_input:
            self._closed_input = True
            messages.append(None)
        return messages

    def take(self, results: list[tuple[int, str, Any]]) -> None:
        """Records the results of one message from the gateway: ``(id,
        "payload" | "items", bytes)`` or ``(id, "error", (code, kind,
        message))`` each."""
        for call_id, outcome, value in results:
            pending = self._pending.get(call_id)
            if pending is None:
                raise DistributeError(
                    f"the gateway answered call {call_id} of the stream, which it was not "
                    "sent; use the same distribute_challenge version as the gateway"
                )
            if outcome == "items":
                self._ready.append(("items", value))
            elif outcome == "payload":
                self._answered(call_id)
                self._finish(call_id, "payload", value)
            elif value[1] == FUNCTION_UNKNOWN:
                self._unknown(call_id, pending)
            else:
                self._answered(call_id)
                self._finish(call_id, "error", call_error(value, self.plan.target))

    def _answered(self, call_id: int) -> None:
        if call_id in self._carried:
            self._carried.discard(call_id)
            self.plan.capture.delivered()

    def _unknown(self, call_id: int, pending: _Pending) -> None:
        """The gateway did not hold the function: send the call again."""
        self.plan.capture.unknown(self.plan.target)
        self._carried.discard(call_id)
        if pending.unknown >= 1:
            self._attach_all = True  # the gateway cannot keep it: always carry it
        attached = self._attach_all or not self._attached_again
        self._attached_again = True
        self._pending[call_id] = _Pending(pending.call, pending.unknown + 1)
        self._send(call_id, pending.call, attached)

    def _finish(self, call_id: int, kind: str, value: Any) -> None:
        self._pending.pop(call_id, None)
        if self._ordered:
            self._done[call_id] = (kind, value)
        else:
            self._ready.append((kind, value))

    @property
    def finished(self) -> bool:
        """Every call was sent and delivered."""
        return self.input_done and not (self._pending or self._done or self._ready)

    def deliverable(self) -> Iterator[Any]:
        """What can be handed out now, in order or as it came: results, or
        raised failures (yielded instead with ``return_exceptions``)."""
        done, ready, bar = self._done, self._ready, self._bar
        ordered, items = self._ordered, self._items
        return_exceptions = self.settings.return_exceptions
        while True:
            if ordered and self._next_out in done:
                kind, value = done.pop(self._next_out)
                self._next_out += 1
            elif ready:
                kind, value = ready.popleft()
            else:
                return
            if kind == "items":
                yield from _outcome.items(value)
                continue
            if bar is not None:
                bar.update(1)
            # In a list popped as it is yielded: once handed out, a result
            # is no longer referenced here (the caller may drop it).
            try:
                result = [_outcome.finish(value) if kind == "payload" else _raise(value)]
                if items:  # a streamed call's last response holds no item
                    continue
            except Exception as exc:
                if not return_exceptions:
                    raise
                result = [exc]
            yield result.pop()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _raise(exc: BaseException) -> Any:
    raise exc


def iterate(
    plan: _Plan, settings: Settings, total: int | None, items: bool, inputs: Iterator[Args]
) -> Iterator[Any]:
    """Runs the calls of ``inputs`` over one stream, in this thread (from the
    first ``next``: nothing happens before)."""
    calls = Calls(plan, settings, total, items)
    try:
        stream = _client.client(plan.target).open_stream(plan.metadata, calls.settings.timeout)
    except CallFailed as exc:
        calls.close()
        raise_from_rpc_error(exc, plan.target)
    try:
        calls.suggest_window(stream.window)
        while True:
            yield from calls.deliverable()
            _fill(calls, inputs)
            _send(stream, calls.messages())
            if calls.finished:
                return
            results = stream.receive()
            if results is None:
                raise _ended_early()
            calls.take(results)
    except CallFailed as exc:
        raise_from_rpc_error(exc, plan.target)
    finally:
        stream.close()
        calls.close()


async def aiterate(
    plan: _Plan, settings: Settings, total: int | None, items: bool, inputs: Any
) -> AsyncIterator[Any]:
    """Runs the calls of ``inputs`` (an iterator, or an async iterator) over
    one stream on the running event loop."""
    calls = Calls(plan, settings, total, items)
    client = _client.client(plan.target)
    try:
        stream = await _client.run_on_loop(
            client.open_stream_async, plan.metadata, calls.settings.timeout
        )
    except CallFailed as exc:
        calls.close()
        raise_from_rpc_error(exc, plan.target)
    try:
        calls.suggest_window(stream.window)
        while True:
            for value in calls.deliverable():
                yield value
                del value  # handed out: not kept while the stream waits
            if hasattr(inputs, "__anext__"):
                await _afill(calls, inputs)
            else:
                _fill(calls, inputs)
            _send(stream, calls.messages())
            if calls.finished:
                return
            results = await _client.run_on_loop(stream.receive_async)
            if results is None:
                raise _ended_early()
            calls.take(results)
    except CallFailed as exc:
        raise_from_rpc_error(exc, plan.target)
    finally:
        stream.close()
        calls.close()


def _send(stream: Stream, messages: list[list[StreamCall] | None]) -> None:
    """Hands ``messages`` to the stream; None ends its calls. One the stream
    cannot take (it ended) is dropped: the next receive says why."""
    for message in messages:
        if message is None:
            stream.finish_sending()
        else:
            stream.send(message)


def as_calls(iterable: Any, star: bool) -> Any:
    """The calls of a map over ``iterable`` (each item an argument, or with
    ``star`` the tuple of arguments), as an iterator of ``(args, kwargs)``,
    or an async one for an async iterable. Refuses what is not iterable now."""
    if hasattr(iterable, "__aiter__"):
        items = aiter(iterable)

        async def async_calls() -> AsyncIterator[Args]:
            async for item in items:
                yield (tuple(item) if star else (item,)), {}

        return async_calls()
    items = iter(iterable)
    if star:
        return ((tuple(arguments), {}) for arguments in items)
    return (((item,), {}) for item in items)


def _fill(calls: Calls, inputs: Iterator[Args]) -> None:
    room = calls.room()
    while room > 0 and not calls.input_done:
        try:
            args, kwargs = next(inputs)
        except StopIteration:
            calls.input_done = True
            return
        calls.add(args, kwargs)
        room -= 1


async def _afill(calls: Calls, inputs: Any) -> None:
    room = calls.room()
    while room > 0 and not calls.input_done:
        try:
            args, kwargs = await inputs.__anext__()
        except StopAsyncIteration:
            calls.input_done = True
            return
        calls.add(args, kwargs)
        room -= 1


def _ended_early() -> DistributeError:
    return DistributeError(
        "the gateway ended the stream before answering every call; use the same "
        "distribute_challenge version as the gateway"
    )


def _tqdm() -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        raise ImportError(
            "progress=True shows a tqdm progress bar, but tqdm is not installed: "
            "pip install tqdm (or the mysticchallenge package's progress extra)"
        ) from None
    return tqdm


def _progress_bar(total: int | None) -> Any:
    return _tqdm()(total=total, unit="call", dynamic_ncols=True)
