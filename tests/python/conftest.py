"""Fixtures for the Python suite: real gateways with real workers, one suite per
transport.

- ``transport``: each entry of :data:`TRANSPORTS` (session-scoped, parametrized).
- ``gateway`` / ``server``: the shared gateway (2 workers) and its URL.
- ``launcher``: starts extra gateways with custom flags; ``start_gateway`` is
  the per-test factory on top of it.
- ``remote``: ``compute_this`` bound to the shared gateway.

Tests that need no gateway (codec, stubs, the shim protocol) use none of these.
Set ``MYSTIC_GATEWAY_BIN`` to test another binary than ``target/release``.
"""

from __future__ import annotations

import itertools

import pytest
from gateway_process import BINARY_ENV, DEFAULT_BINARY, GatewayProcess, gateway_binary

from distribute_challenge import compute_this

# Every transport the gateway suite runs on.
TRANSPORTS = ["pipe", "shm"]


class Launcher:
    """Starts gateways for one transport and stops them, checking they exit 0."""

    def __init__(self, transport: str, tmp_path_factory: pytest.TempPathFactory) -> None:
        binary = gateway_binary()
        if binary is None:
            pytest.fail(
                f"no gateway binary at {DEFAULT_BINARY} (or ${BINARY_ENV}): "
                "run `cargo build --release` first"
            )
        self.binary = binary
        self.transport = transport
        self.tmp_path_factory = tmp_path_factory
        self._numbers = itertools.count()

    def start(self, *flags: str) -> GatewayProcess:
        workdir = self.tmp_path_factory.mktemp(f"gateway-{self.transport}-{next(self._numbers)}")
        return GatewayProcess(self.binary, self.transport, list(flags), workdir).start()

    @staticmethod
    def stop(gateway: GatewayProcess) -> None:
        status = gateway.stop()
        assert status == 0, f"the gateway exited with {status} after SIGTERM{gateway._tail()}"


@pytest.fixture(scope="session", params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def launcher(transport: str, tmp_path_factory: pytest.TempPathFactory) -> Launcher:
    return Launcher(transport, tmp_path_factory)


@pytest.fixture(scope="session")
def gateway(launcher: Launcher):
    started = launcher.start()
    yield started
    launcher.stop(started)


@pytest.fixture(scope="session")
def server(gateway: GatewayProcess) -> str:
    return gateway.url


@pytest.fixture
def start_gateway(launcher: Launcher):
    """``start_gateway("--call-timeout", "1")``: a fresh gateway for this test."""
    started: list[GatewayProcess] = []

    def start(*flags: str) -> GatewayProcess:
        gateway = launcher.start(*flags)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        launcher.stop(gateway)


@pytest.fixture
def remote(server: str):
    """``remote(fn, **settings)``: ``compute_this(server=<shared gateway>, **settings)(fn)``."""

    def make(function=None, **settings):
        decorator = compute_this(server=server, **settings)
        return decorator if function is None else decorator(function)

    return make
