"""The public API: the ``compute_this`` decorator, the remote function it makes,
and the call object whose ``run()`` and ``async_run()`` are twins over one
request builder (``_prepare``), one retry policy (``_retry.BusyRetry``: a call
refused because the gateway's queue is full is sent again) and one response
handler (``_finish``).
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from mystic_wire import (
    ERROR,
    OK,
    SerializationError,
    decode_response,
    describe_depmodules,
    encode_request,
)

from . import _client, _gateways, _retry, _token
from ._by_value import pickle_module_by_value_if_needed
from ._pb import gateway_pb2
from ._status import raise_from_rpc_error
from ._target import Target, parse_server, resolve_server

DepModule = types.ModuleType | str


def compute_this(
    server: str | None = None,
    depmodules: Iterable[DepModule] | DepModule = (),
    timeout: float | None = None,
    token: str | None = None,
    busy_timeout: float = _retry.DEFAULT_BUSY_TIMEOUT,
    insecure_plaintext_token: bool = False,
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

    ``func(*args, **kwargs)`` then returns a call object: ``.run()`` blocks for
    the result, ``await .async_run()`` awaits it.
    """
    if callable(server):  # used bare, as @compute_this
        return compute_this()(server)  # type: ignore[return-value]
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
    if isinstance(depmodules, str | types.ModuleType):
        depmodules = (depmodules,)
    depmodules = tuple(depmodules)
    describe_depmodules(None, depmodules)  # refuse bad entries now

    def decorate(function: Callable[..., Any]) -> RemoteFunction:
        if not callable(function):
            raise TypeError(f"compute_this decorates functions, not {function!r}")
        settings = _Settings(
            server, depmodules, timeout, token, busy_timeout, insecure_plaintext_token
        )
        return RemoteFunction(function, settings)

    return decorate


@dataclass(frozen=True)
class _Settings:
    server: str | None
    depmodules: tuple[DepModule, ...]
    timeout: float | None
    token: str | None
    busy_timeout: float = _retry.DEFAULT_BUSY_TIMEOUT
    insecure_plaintext_token: bool = False

    def target(self) -> Target:
        return resolve_server(self.server)

    def metadata(self, target: Target) -> tuple[tuple[str, str], ...]:
        return _token.authorization(target, self.token, self.insecure_plaintext_token)


class RemoteFunction:
    """A function that runs on the gateway's workers. The original function is
    ``__wrapped__``; calling this returns a :class:`Call`."""

    def __init__(self, function: Callable[..., Any], settings: _Settings) -> None:
        functools.update_wrapper(self, function)
        self._settings = settings

    def __call__(self, *args: Any, **kwargs: Any) -> Call:
        return Call(self.__wrapped__, args, kwargs, self._settings)

    def get_workers(self) -> int:
        """The number of workers of every gateway that answers (each asked on
        its own; see :meth:`get_gateways`)."""
        return _gateways.count_workers(self.get_gateways())

    def get_gateways(self) -> list[_gateways.GatewayWorkers]:
        """Each gateway's ``GetWorkers`` answer, or the error it gave instead:
        every entry of a list, every address a DNS name resolves to now."""
        target = self._settings.target()
        return _gateways.survey(target, self._settings.timeout, self._settings.metadata(target))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickled (e.g. a function that calls itself by name), it becomes the
        # plain function: inside the worker it runs locally.
        return _plain_function, (self.__wrapped__,)

    def __repr__(self) -> str:
        return f"<remote function {self.__wrapped__.__qualname__}>"


def _plain_function(function: Callable[..., Any]) -> Callable[..., Any]:
    return function


@dataclass(frozen=True)
class _Prepared:
    target: Target
    request: gateway_pb2.ExecuteRequest
    metadata: tuple[tuple[str, str], ...]
    retry: _retry.BusyRetry


class Call:
    """One pending call of a remote function; run it with :meth:`run` or
    :meth:`async_run` (each run is a new remote call)."""

    def __init__(
        self, function: Callable[..., Any], args: tuple, kwargs: dict, settings: _Settings
    ) -> None:
        self._function = function
        self._args = args
        self._kwargs = kwargs
        self._settings = settings

    def run(self) -> Any:
        """Runs the call and blocks until its result (works inside a running event loop)."""
        prepared = self._prepare()
        stub = _client.sync_stub(prepared.target)
        retry = prepared.retry
        while True:
            try:
                response = stub.Execute(
                    prepared.request,
                    timeout=retry.attempt_timeout(),
                    metadata=prepared.metadata,
                )
                break
            except grpc.RpcError as exc:
                delay = retry.next_delay(exc)
                if delay is None:
                    raise_from_rpc_error(exc, prepared.target, retry.summary())
            time.sleep(delay)
        return _finish(response.payload)

    async def async_run(self) -> Any:
        """Runs the call with ``grpc.aio`` on the running event loop."""
        prepared = self._prepare()
        stub = _client.async_stub(prepared.target)
        retry = prepared.retry
        while True:
            try:
                response = await stub.Execute(
                    prepared.request,
                    timeout=retry.attempt_timeout(),
                    metadata=prepared.metadata,
                )
                break
            except grpc.RpcError as exc:
                delay = retry.next_delay(exc)
                if delay is None:
                    raise_from_rpc_error(exc, prepared.target, retry.summary())
            await asyncio.sleep(delay)
        return _finish(response.payload)

    def _prepare(self) -> _Prepared:
        """The request builder shared by both runs; pickles before anything is sent.
        A function from a module the worker cannot import travels by value."""
        settings = self._settings
        target = settings.target()
        spec = describe_depmodules(self._function, settings.depmodules)
        pickle_module_by_value_if_needed(getattr(self._function, "__module__", None))
        payload = encode_request(self._function, self._args, self._kwargs, spec)
        return _Prepared(
            target=target,
            request=gateway_pb2.ExecuteRequest(payload=payload),
            metadata=settings.metadata(target),
            retry=_retry.BusyRetry(
                settings.timeout, settings.busy_timeout, others=lambda: _others(target)
            ),
        )

    def __repr__(self) -> str:
        return f"<call of {getattr(self._function, '__qualname__', self._function)!r}>"


def _others(target: Target) -> int:
    """How many other gateways a refused call can be sent to at once."""
    return len(_gateways.members(target)) - 1 if target.balanced else 0


def _finish(payload: bytes) -> Any:
    """Turns a response payload into the result, or raises what the call raised."""
    response = decode_response(payload)
    _replay(response.stdout, sys.stdout)
    _replay(response.stderr, sys.stderr)
    if response.kind == OK:
        return response.value
    if response.kind == ERROR:
        raise SerializationError(response.value)
    raise response.value


def _replay(text: str, stream: Any) -> None:
    if text and stream is not None:
        stream.write(text)
        stream.flush()
