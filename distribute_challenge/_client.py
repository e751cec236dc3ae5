"""gRPC channels and stubs, cached so that calls share connections.

- Sync (``Call.run``): one ``grpc.Channel`` per target per process. A process
  made by ``fork`` does not reuse its parent's channel: the cache remembers the
  pid that made each channel.
- Async (``Call.async_run``): a ``grpc.aio`` channel belongs to the event loop
  it was made on, so there is one per target per running loop, in a
  ``WeakKeyDictionary`` keyed by the loop. Each ``asyncio.run`` gets fresh
  channels; a closed loop's channels go away with the loop.

Every channel lifts gRPC's message size limits (the gateway enforces its own)
and keeps its connections to itself (no global subchannel pool), so that the
channel a forked child makes does not pick up its parent's connection.

A channel to a ``unix:`` socket sends ``localhost`` as the ``:authority``:
gRPC's own default there is the percent-encoded socket path
(``tmp%2Fgateway.sock``), which is not a valid authority, and the gateway's
HTTP/2 server (h2) resets every such stream with ``PROTOCOL_ERROR``.

A balanced target (a list of gateways or a DNS name, see ``_target.py``)
gets gRPC's ``round_robin`` policy through the channel's default service
config: each call goes to the next gateway whose connection is ready; a
gateway that goes away drops out of the rotation (calls running there fail
with ``UNAVAILABLE``) and comes back into it once gRPC reconnects. Reconnect
attempts back off from 1 s to at most ``MAX_RECONNECT_BACKOFF_MS`` (gRPC's
own default is 120 s), so a restarted gateway is used again within seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import weakref

import grpc
import grpc.aio

from ._pb import gateway_pb2_grpc
from ._target import Target

MAX_RECONNECT_BACKOFF_MS = 5000
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # Each channel owns its connections: a child process must not reuse, from
    # gRPC's global subchannel pool, a connection its parent opened.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
)
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
# The :authority of calls over a Unix socket (see the module docstring).
UNIX_AUTHORITY = "localhost"

_lock = threading.Lock()
_sync_stubs: dict[Target, tuple[int, grpc.Channel, gateway_pb2_grpc.GatewayStub]] = {}
_async_stubs: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[Target, gateway_pb2_grpc.GatewayStub]
] = weakref.WeakKeyDictionary()


def sync_stub(target: Target) -> gateway_pb2_grpc.GatewayStub:
    """The blocking stub for ``target`` in this process."""
    pid = os.getpid()
    with _lock:
        cached = _sync_stubs.get(target)
        if cached is not None and cached[0] == pid:
            return cached[2]
        # A channel inherited across fork is dropped, never closed: the parent owns it.
        if target.tls:
            channel = grpc.secure_channel(
                target.address, _credentials(target), options=channel_options(target)
            )
        else:
            channel = grpc.insecure_channel(target.address, options=channel_options(target))
        stub = gateway_pb2_grpc.GatewayStub(channel)
        _sync_stubs[target] = (pid, channel, stub)
        return stub


def async_stub(target: Target) -> gateway_pb2_grpc.GatewayStub:
    """The asyncio stub for ``target`` on the running event loop."""
    loop = asyncio.get_running_loop()
    with _lock:
        stubs = _async_stubs.get(loop)
        if stubs is None:
            stubs = _async_stubs[loop] = {}
        stub = stubs.get(target)
        if stub is None:
            options = channel_options(target)
            if target.tls:
                channel = grpc.aio.secure_channel(
                    target.address, _credentials(target), options=options
                )
            else:
                channel = grpc.aio.insecure_channel(target.address, options=options)
            stub = stubs[target] = gateway_pb2_grpc.GatewayStub(channel)
        return stub


def channel_options(target: Target) -> tuple[tuple[str, object], ...]:
    """The options of a channel to ``target``: ``CHANNEL_OPTIONS``, plus
    ``round_robin`` for a balanced target and the authority (the name TLS
    checks) when the address does not carry one."""
    options = CHANNEL_OPTIONS
    if target.balanced:
        options += (("grpc.service_config", ROUND_ROBIN),)
    if target.authority:
        # TLS checks the gateway's certificate against this name.
        options += (("grpc.default_authority", target.authority),)
    elif target.is_unix:
        options += (("grpc.default_authority", UNIX_AUTHORITY),)
    return options


def _credentials(target: Target) -> grpc.ChannelCredentials:
    root_certificates = None
    if target.ca_file:
        try:
            with open(target.ca_file, "rb") as file:
                root_certificates = file.read()
        except OSError as exc:
            raise ValueError(
                f"cannot read the CA file {target.ca_file!r} named by $DISTRIBUTE_CA_FILE: "
                f"{exc.strerror}; point it at a PEM file or unset it to trust the system roots"
            ) from exc
    return grpc.ssl_channel_credentials(root_certificates=root_certificates)
