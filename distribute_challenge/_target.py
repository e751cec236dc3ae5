"""Where calls go: the server address, parsed into the target gRPC dials.

The ``server=`` argument, else ``$DISTRIBUTE_SERVER``, else
``grpc://127.0.0.1:8000``. Accepted forms:

- One gateway: ``grpc://HOST:PORT`` (plaintext), ``grpcs://HOST:PORT`` (TLS,
  trusting the system roots or the PEM file named by ``$DISTRIBUTE_CA_FILE``),
  bare ``HOST:PORT`` (plaintext), or ``unix:PATH`` / ``unix:///ABSOLUTE``
  (the Unix socket of a gateway started with ``--listen unix:PATH``, on this
  host). IPv6 hosts go in brackets: ``grpc://[::1]:8000``.
- Several gateways: a comma-separated list of such addresses, all of one
  scheme (an entry without a scheme takes the first entry's):
  ``grpc://10.0.0.1:8000,10.0.0.2:8000``, ``unix:/run/a.sock,/run/b.sock``.
  Hosts in a list are IP addresses of one family (gRPC's ``ipv4:``/``ipv6:``
  targets), or all ``unix:`` paths; for host names use a DNS name.
- A DNS name whose every address is a gateway: ``dns:///NAME:PORT``
  (plaintext) or ``grpcs+dns:///NAME:PORT`` (TLS, checked against NAME),
  e.g. a Kubernetes headless Service. gRPC resolves it and re-resolves it
  when connections fail.

A relative ``unix:`` path is taken from the current directory when the
address is parsed (at each call: the target is resolved per call), and made
absolute there: a channel keeps dialling the socket it was made for, even
after ``os.chdir``. A socket path, once absolute, can be at most
:data:`MAX_UNIX_PATH_BYTES` bytes (``sun_path``); a longer one is a
``ValueError`` here rather than a failed connection later.

Lists and DNS names are *balanced*: the channel spreads calls with gRPC's own
``round_robin`` policy (``_client.py``); a single address keeps gRPC's
default (``pick_first``). With TLS, every gateway of a list must present a
certificate valid for the first entry's host (share one certificate).
"""

from __future__ import annotations

import functools
import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_SERVER = "grpc://127.0.0.1:8000"
MAX_UNIX_PATH_BYTES = 107
SERVER_ENV = "DISTRIBUTE_SERVER"
CA_FILE_ENV = "DISTRIBUTE_CA_FILE"

_SCHEMES = {"grpc": False, "grpcs": True}
_DNS_SCHEMES = {"dns": False, "grpcs+dns": True}
_FORMS = (
    "use grpc://HOST:PORT, grpcs://HOST:PORT or HOST:PORT (e.g. grpc://127.0.0.1:8000), "
    "unix:PATH, a comma-separated list of one of these, or dns:///NAME:PORT"
)


@dataclass(frozen=True)
class Target:
    """A parsed server address: what gRPC dials, and how."""

    address: str
    """The gRPC target: ``HOST:PORT``, ``ipv4:A:P,B:P``, ``ipv6:[A]:P,...``,
    ``dns:///NAME:PORT`` or ``unix:PATH[,PATH...]``."""
    tls: bool
    ca_file: str | None = None
    gateways: tuple[str, ...] = ()
    """A list's entries (``HOST:PORT``, or paths for ``unix:``); empty otherwise."""
    authority: str | None = None
    """``HOST:PORT`` sent as ``:authority`` and checked by TLS, when ``address``
    does not name one host (a list, a name's resolved address)."""
    balanced: bool = False
    """Whether calls are spread over several gateways (a list or a DNS name)."""

    @property
    def url(self) -> str:
        """The address as a user writes it, for messages and reports."""
        if self.is_dns:
            return f"{'grpcs+dns' if self.tls else 'dns'}:///{self.authority}"
        if self.is_unix:
            return self.address
        scheme = "grpcs" if self.tls else "grpc"
        if self.gateways:
            return ",".join(f"{scheme}://{gateway}" for gateway in self.gateways)
        return f"{scheme}://{self.address}"

    @property
    def is_dns(self) -> bool:
        return self.address.startswith("dns:")

    @property
    def is_unix(self) -> bool:
        return self.address.startswith("unix:")

    def where(self) -> str:
        """``the gateway at URL`` or ``the gateways at URL``, for messages."""
        return f"the gateway{'s' if self.balanced else ''} at {self.url}"

    def hosts(self) -> tuple[str, ...]:
        """The host of each address (without brackets); none for ``unix:``."""
        if self.is_unix:
            return ()
        addresses = self.gateways or (self.authority if self.is_dns else self.address,)
        return tuple(address.rsplit(":", 1)[0].strip("[]") for address in addresses)

    def is_loopback(self) -> bool:
        """Whether every gateway is on this host: ``unix:``, loopback IPs, ``localhost``."""
        return all(_is_loopback_host(host) for host in self.hosts())


def resolve_server(server: str | None) -> Target:
    """The target for a call: argument, then environment, then the default."""
    if server is None:
        server = os.environ.get(SERVER_ENV) or DEFAULT_SERVER
    return parse_server(server)


def parse_server(server: str) -> Target:
    """Parses any form in this module's docstring."""
    if not isinstance(server, str):
        raise ValueError(f"the server address must be a string, not {type(server).__name__}")
    return _parse(server, os.environ.get(CA_FILE_ENV) or None, _cwd_for(server))


@functools.lru_cache(maxsize=256)
def _parse(server: str, ca_file: str | None, cwd: str | None) -> Target:
    """Every call parses its server: cached by what the parse depends on (the
    CA file, and for ``unix:`` the current directory a relative path is in)."""
    raw = server.strip()
    if "," in raw:
        return _parse_list(server, [entry.strip() for entry in raw.split(",")])
    scheme = raw.split(":", 1)[0].lower()
    if scheme in _DNS_SCHEMES:
        return _parse_dns(server, raw)
    if scheme == "unix":
        return Target(address=f"unix:{_unix_path(server, raw)}", tls=False)
    host, port, tls = _host_port(server, raw, default_scheme="grpc")
    return Target(address=f"{host}:{port}", tls=tls, ca_file=_ca_file(tls))


def _parse_list(server: str, entries: list[str]) -> Target:
    if not all(entries):
        raise _bad(server, "an entry of the list is empty (a stray comma?)")
    if any(entry.split(":", 1)[0].lower() in _DNS_SCHEMES for entry in entries):
        raise _bad(
            server,
            "a DNS name cannot be part of a list: give dns:///NAME:PORT alone, it "
            "spreads calls over every address of the name",
        )
    if len(set(entries)) != len(entries):
        raise _bad(server, "an address is listed twice")
    if entries[0].lower().startswith("unix:"):
        if any("://" in entry and not entry.lower().startswith("unix:") for entry in entries):
            raise _bad(server, "a list takes addresses of one scheme: all unix:, or none")
        paths = tuple(
            _unix_path(server, entry if entry.lower().startswith("unix:") else f"unix:{entry}")
            for entry in entries
        )
        return Target(address="unix:" + ",".join(paths), tls=False, gateways=paths, balanced=True)
    if any(entry.lower().startswith("unix:") for entry in entries):
        raise _bad(server, "a list takes addresses of one scheme: all unix:, or none")
    first_scheme = entries[0].split("://", 1)[0] if "://" in entries[0] else "grpc"
    parsed = [_host_port(server, entry, default_scheme=first_scheme) for entry in entries]
    tls = parsed[0][2]
    if any(entry_tls != tls for _, _, entry_tls in parsed):
        raise _bad(server, "a list takes addresses of one scheme: all grpc://, or all grpcs://")
    families = set()
    for host, _, _ in parsed:
        try:
            families.add(ipaddress.ip_address(host.strip("[]")).version)
        except ValueError:
            raise _bad(
                server,
                f"{host!r} is not an IP address: a list takes IP addresses; for host "
                "names use one DNS name, dns:///NAME:PORT",
            ) from None
    if len(families) > 1:
        raise _bad(
            server,
            "a list takes IP addresses of one family (all IPv4 or all IPv6), as gRPC's "
            "ipv4:/ipv6: targets do",
        )
    gateways = tuple(f"{host}:{port}" for host, port, _ in parsed)
    family = "ipv4" if families == {4} else "ipv6"
    return Target(
        address=f"{family}:" + ",".join(gateways),
        tls=tls,
        ca_file=_ca_file(tls),
        gateways=gateways,
        authority=gateways[0],
        balanced=True,
    )


def _parse_dns(server: str, raw: str) -> Target:
    scheme, _, rest = raw.partition(":")
    tls = _DNS_SCHEMES[scheme.lower()]
    if not rest.startswith("///"):
        raise _bad(server, "a DNS name is written dns:///NAME:PORT (three slashes, no DNS server)")
    host, port, _ = _host_port(server, rest[3:], default_scheme="grpc")
    authority = f"{host}:{port}"
    return Target(
        address=f"dns:///{authority}",
        tls=tls,
        ca_file=_ca_file(tls),
        authority=authority,
        balanced=True,
    )


def _host_port(server: str, raw: str, default_scheme: str) -> tuple[str, int, bool]:
    """``(host, port, tls)`` of ``[SCHEME://]HOST:PORT``; an IPv6 host keeps its brackets."""
    url = raw if "://" in raw else f"{default_scheme}://{raw}"
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
    return parts.netloc.rsplit(":", 1)[0], port, _SCHEMES[parts.scheme]


def _unix_path(server: str, raw: str) -> str:
    """The absolute path of ``unix:PATH`` or ``unix:///ABSOLUTE``."""
    path = raw[len("unix:") :]
    if path.startswith("//"):
        path = path[2:]
        if not path.startswith("/"):
            raise _bad(server, "unix:// takes no host: write unix:PATH or unix:///ABSOLUTE/PATH")
    if not path:
        raise _bad(server, "the socket path is missing")
    if not os.path.isabs(path):
        # Read afresh for each parse, and part of _parse's cache key.
        cwd = _cwd_for(raw)
        if cwd is None:
            raise _bad(server, "the current directory is gone: give the socket's absolute path")
        # Joined, not normalized: "a/../b" means what the kernel makes of it.
        path = os.path.join(cwd, path)
    length = len(os.fsencode(path))
    if length > MAX_UNIX_PATH_BYTES:
        raise _bad(
            server,
            f"the socket path {path} is {length} bytes long; a Unix socket path can be at "
            f"most {MAX_UNIX_PATH_BYTES} bytes",
        )
    return path


def _cwd_for(server: str) -> str | None:
    """The current directory if ``server`` names a ``unix:`` socket (whose
    path may be relative to it), else None."""
    if "unix:" not in server.lower():
        return None
    try:
        return os.getcwd()
    except FileNotFoundError:
        return None


def _ca_file(tls: bool) -> str | None:
    # Read afresh for each parse, and part of _parse's cache key.
    return (os.environ.get(CA_FILE_ENV) or None) if tls else None


def _is_loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        name = host.lower().rstrip(".")
        return name == "localhost" or name.endswith(".localhost")


def _bad(server: str, reason: str) -> ValueError:
    return ValueError(f"invalid server address {server!r} ({reason}); {_FORMS}")
