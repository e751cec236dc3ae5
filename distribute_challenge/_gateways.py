"""Each gateway of a target on its own: the per-gateway view behind
``get_workers()`` and ``get_gateways()``.

A balanced channel sends each call to one gateway of its choice, so asking
it for ``GetWorkers`` would count one gateway. Instead each gateway is asked
on a channel of its own (:func:`members`):

- a list: each entry;
- a DNS name: each address the name resolves to now (``getaddrinfo``),
  checked by TLS against the name;
- one address: itself.

``get_workers()`` is the sum over the gateways that answer; when none
answers it raises what the first one failed with.
"""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass

from mystic_native import CallFailed, get_workers_of_each
from mystic_wire import DistributeError, ServerUnavailable

from . import _client
from ._status import raise_from_rpc_error
from ._target import Target


class WorkerState(enum.IntEnum):
    """A worker's state, as the gateway's ``WorkerState`` numbers it."""

    UNSPECIFIED = 0
    STARTING = 1
    IDLE = 2
    BUSY = 3
    RESTARTING = 4
    STOPPED = 5


@dataclass(frozen=True)
class WorkerInfo:
    """One worker of a gateway."""

    index: int
    pid: int
    state: WorkerState
    calls_served: int
    restarts: int
    recycled: int


@dataclass(frozen=True)
class GatewayInfo:
    """A gateway's answer to ``GetWorkers``."""

    count: int
    """Its number of workers."""
    transport: str
    """``pipe`` or ``shm``."""
    ready: int
    """Workers ready for calls."""
    segment_socket: str
    """The same-host segment door's socket, or empty."""
    workers: tuple[WorkerInfo, ...]


def workers_info(answer: tuple | None) -> GatewayInfo | None:
    """The ``GetWorkers`` answer as the extension gives it, as a :class:`GatewayInfo`."""
    if answer is None:
        return None
    count, transport, ready, segment_socket, workers = answer
    return GatewayInfo(
        count,
        transport,
        ready,
        segment_socket,
        tuple(
            WorkerInfo(index, pid, _state(state), served, restarts, recycled)
            for index, pid, state, served, restarts, recycled in workers
        ),
    )


def _state(number: int) -> WorkerState:
    try:
        return WorkerState(number)
    except ValueError:
        return WorkerState.UNSPECIFIED


@dataclass(frozen=True)
class GatewayWorkers:
    """One gateway's answer to ``GetWorkers``, or why it gave none."""

    target: Target
    """The gateway alone (``target.url`` names it)."""
    info: GatewayInfo | None
    """Its workers (count, transport, each worker's pid, state, calls served), if it answered."""
    error: DistributeError | None = None
    """Why it did not answer."""

    @property
    def count(self) -> int:
        """Its number of workers; 0 when it did not answer."""
        return self.info.count if self.info is not None else 0


def members(target: Target) -> list[Target]:
    """One single-gateway target per gateway of ``target``."""
    if target.is_unix:
        return [Target(address=f"unix:{path}", tls=False) for path in target.gateways] or [target]
    if target.gateways:
        return [
            Target(address=gateway, tls=target.tls, ca_file=target.ca_file)
            for gateway in target.gateways
        ]
    if target.is_dns:
        return [
            Target(address=address, tls=target.tls, ca_file=target.ca_file, authority=authority)
            for address, authority in _resolve(target)
        ]
    return [target]


def survey(
    target: Target, timeout: float | None, metadata: tuple[tuple[str, str], ...]
) -> list[GatewayWorkers]:
    """Asks every gateway of ``target`` for its workers, all at once (one that
    cannot be reached costs its own wait, not the others')."""
    gateways = members(target)
    outcomes = get_workers_of_each(
        [_client.client(member) for member in gateways], metadata, timeout
    )
    answers = []
    for member, (ok, value) in zip(gateways, outcomes, strict=True):
        if ok:
            answers.append(GatewayWorkers(member, workers_info(value)))
            continue
        assert isinstance(value, CallFailed)
        try:
            raise_from_rpc_error(value, member)
        except DistributeError as error:
            answers.append(GatewayWorkers(member, None, error))
    return answers


def count_workers(answers: list[GatewayWorkers]) -> int:
    """The workers of every gateway that answered; raises if none did."""
    if not any(answer.info is not None for answer in answers):
        raise answers[0].error
    return sum(answer.count for answer in answers)


def _resolve(target: Target) -> list[tuple[str, str]]:
    """``(address, authority)`` for each address the DNS name resolves to now."""
    host, port = target.authority.rsplit(":", 1)
    try:
        found = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ServerUnavailable(
            f"cannot resolve {host!r} of {target.url}: {exc.strerror}. Check the name "
            "(and that DNS reaches it), or list the gateways' addresses instead."
        ) from exc
    addresses = []
    for family, _, _, _, sockaddr in found:
        ip = sockaddr[0]
        address = f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"
        if address not in addresses:
            addresses.append(address)
    return [(address, target.authority) for address in addresses]
