"""Where calls go and who makes them: the server address and the token.

Server: the ``server=`` argument, else ``$DISTRIBUTE_SERVER``, else
``grpc://127.0.0.1:8000``. Accepted forms: ``grpc://HOST:PORT`` (plaintext),
``grpcs://HOST:PORT`` (TLS, trusting the system roots or the PEM file named by
``$DISTRIBUTE_CA_FILE``) and bare ``HOST:PORT`` (plaintext). IPv6 hosts go in
brackets: ``grpc://[::1]:8000``.

Token: the ``token=`` argument, else ``$DISTRIBUTE_TOKEN``; sent as
``authorization: Bearer <token>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_SERVER = "grpc://127.0.0.1:8000"
SERVER_ENV = "DISTRIBUTE_SERVER"
TOKEN_ENV = "DISTRIBUTE_TOKEN"
CA_FILE_ENV = "DISTRIBUTE_CA_FILE"

_SCHEMES = {"grpc": False, "grpcs": True}


@dataclass(frozen=True)
class Target:
    """A parsed server address."""

    address: str
    """``HOST:PORT`` as gRPC wants it."""
    tls: bool
    ca_file: str | None = None

    @property
    def url(self) -> str:
        return f"{'grpcs' if self.tls else 'grpc'}://{self.address}"


def resolve_server(server: str | None) -> Target:
    """The target for a call: argument, then environment, then the default."""
    if server is None:
        server = os.environ.get(SERVER_ENV) or DEFAULT_SERVER
    return parse_server(server)


def parse_server(server: str) -> Target:
    """Parses ``grpc://HOST:PORT``, ``grpcs://HOST:PORT`` or ``HOST:PORT``."""
    if not isinstance(server, str):
        raise ValueError(f"the server address must be a string, not {type(server).__name__}")
    raw = server.strip()
    url = raw if "://" in raw else f"grpc://{raw}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _bad(server, str(exc)) from None
    if parts.scheme not in _SCHEMES:
        raise _bad(server, f"unknown scheme {parts.scheme!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise _bad(server, "only a host and a port may follow the scheme")
    if not parts.hostname:
        raise _bad(server, "the host is missing")
    if port is None:
        raise _bad(server, "the port is missing")
    host = parts.netloc.rsplit(":", 1)[0]
    tls = _SCHEMES[parts.scheme]
    ca_file = (os.environ.get(CA_FILE_ENV) or None) if tls else None
    return Target(address=f"{host}:{port}", tls=tls, ca_file=ca_file)


def resolve_token(token: str | None) -> str | None:
    """The token for a call: argument, then environment; None for no token."""
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    return token


def _bad(server: str, reason: str) -> ValueError:
    return ValueError(
        f"invalid server address {server!r} ({reason}); use grpc://HOST:PORT, "
        "grpcs://HOST:PORT or HOST:PORT, e.g. grpc://127.0.0.1:8000"
    )
