"""Server addresses and tokens (``distribute_challenge._target``), and the
decorator's argument checks, without a gateway."""

import re

import pytest

from distribute_challenge import compute_this
from distribute_challenge._target import Target, parse_server, resolve_server
from distribute_challenge._token import resolve_token


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("grpc://127.0.0.1:8000", Target("127.0.0.1:8000", tls=False)),
        ("127.0.0.1:9", Target("127.0.0.1:9", tls=False)),
        ("localhost:50051", Target("localhost:50051", tls=False)),
        ("grpc://example.com:443/", Target("example.com:443", tls=False)),
        ("grpcs://example.com:443", Target("example.com:443", tls=True)),
        ("grpc://[::1]:8000", Target("[::1]:8000", tls=False)),
        ("  grpc://host:1  ", Target("host:1", tls=False)),
    ],
)
def test_accepted_forms(raw, expected, monkeypatch):
    monkeypatch.delenv("DISTRIBUTE_CA_FILE", raising=False)
    assert parse_server(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "http://127.0.0.1:8000",
        "grpc://127.0.0.1",
        "127.0.0.1",
        "grpc://:8000",
        "grpc://host:notaport",
        "grpc://host:99999",
        "grpc://host:8000/path",
        "grpc://user@host:8000",
        "grpc://host:8000?x=1",
    ],
)
def test_bad_addresses_are_value_errors_that_show_the_right_form(raw):
    with pytest.raises(ValueError, match="grpc://HOST:PORT"):
        parse_server(raw)


def test_a_bad_address_is_refused_at_decoration():
    with pytest.raises(ValueError, match="invalid server address"):
        compute_this(server="http://nowhere")


def test_tls_takes_the_ca_file_from_the_environment(monkeypatch):
    monkeypatch.setenv("DISTRIBUTE_CA_FILE", "/etc/ca.pem")
    assert parse_server("grpcs://h:1").ca_file == "/etc/ca.pem"
    assert parse_server("grpc://h:1").ca_file is None


def test_server_precedence(monkeypatch):
    monkeypatch.delenv("DISTRIBUTE_SERVER", raising=False)
    assert resolve_server(None).url == "grpc://127.0.0.1:8000"
    monkeypatch.setenv("DISTRIBUTE_SERVER", "grpc://from-env:1")
    assert resolve_server(None).url == "grpc://from-env:1"
    assert resolve_server("grpc://from-arg:2").url == "grpc://from-arg:2"


def test_token_precedence(monkeypatch):
    monkeypatch.delenv("DISTRIBUTE_TOKEN", raising=False)
    assert resolve_token(None) is None
    monkeypatch.setenv("DISTRIBUTE_TOKEN", "env-token")
    assert resolve_token(None) == "env-token"
    assert resolve_token("arg-token") == "arg-token"


@pytest.mark.parametrize("timeout", [0, -1, "1", True])
def test_bad_timeouts_are_refused(timeout):
    with pytest.raises(ValueError, match="timeout"):
        compute_this(timeout=timeout)


def test_bad_depmodules_are_refused():
    with pytest.raises(TypeError, match="depmodules"):
        compute_this(depmodules=[42])


def test_the_decorator_keeps_the_original_function():
    def square(x):
        """Squares."""
        return x * x

    remote = compute_this(server="grpc://127.0.0.1:1")(square)
    assert remote.__wrapped__ is square
    assert remote.__name__ == "square"
    assert remote.__doc__ == "Squares."
    bare = compute_this(square)
    assert bare.__wrapped__ is square


def test_an_unreadable_ca_file_is_a_clear_value_error(monkeypatch, tmp_path):
    missing = tmp_path / "missing-ca.pem"
    monkeypatch.setenv("DISTRIBUTE_CA_FILE", str(missing))
    function = compute_this(server="grpcs://127.0.0.1:1")(lambda: None)
    with pytest.raises(ValueError, match="missing-ca.pem"):
        function().run()


@pytest.mark.parametrize(
    ("raw", "address", "gateways", "tls"),
    [
        (
            "grpc://127.0.0.1:5001,grpc://127.0.0.1:5002",
            "ipv4:127.0.0.1:5001,127.0.0.1:5002",
            ("127.0.0.1:5001", "127.0.0.1:5002"),
            False,
        ),
        (
            "grpcs://10.0.0.1:443, 10.0.0.2:443",  # the first entry's scheme applies
            "ipv4:10.0.0.1:443,10.0.0.2:443",
            ("10.0.0.1:443", "10.0.0.2:443"),
            True,
        ),
        ("127.0.0.1:1,127.0.0.2:1", "ipv4:127.0.0.1:1,127.0.0.2:1", None, False),
        ("grpc://[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2", ("[::1]:1", "[::1]:2"), False),
        ("unix:/run/a.sock,unix:///run/b.sock", "unix:/run/a.sock,/run/b.sock", None, False),
    ],
)
def test_lists_become_balanced_ip_targets(raw, address, gateways, tls, monkeypatch):
    monkeypatch.delenv("DISTRIBUTE_CA_FILE", raising=False)
    target = parse_server(raw)
    assert target.address == address
    assert target.balanced and target.tls is tls
    if gateways is not None:
        assert target.gateways == gateways
    assert parse_server(target.url) == target  # the URL reads back as the same target


def test_a_tls_list_checks_the_first_entry_and_takes_the_ca_file(monkeypatch):
    monkeypatch.setenv("DISTRIBUTE_CA_FILE", "/etc/ca.pem")
    target = parse_server("grpcs://127.0.0.1:1,127.0.0.1:2")
    assert target.authority == "127.0.0.1:1"
    assert target.ca_file == "/etc/ca.pem"
    assert target.url == "grpcs://127.0.0.1:1,grpcs://127.0.0.1:2"


@pytest.mark.parametrize(
    ("raw", "address", "tls"),
    [
        ("dns:///localhost:8000", "dns:///localhost:8000", False),
        ("grpcs+dns:///gateways.default.svc:8000", "dns:///gateways.default.svc:8000", True),
        ("DNS:///[::1]:8000", "dns:///[::1]:8000", False),
    ],
)
def test_dns_names_are_balanced(raw, address, tls):
    target = parse_server(raw)
    assert (target.address, target.tls, target.balanced) == (address, tls, True)
    assert parse_server(target.url) == target


def test_one_address_is_not_balanced():
    assert not parse_server("grpc://127.0.0.1:1").balanced
    assert parse_server("unix:/run/g.sock") == Target("unix:/run/g.sock", tls=False)


def test_a_relative_socket_path_is_taken_from_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_server("unix:g.sock").address == f"unix:{tmp_path}/g.sock"
    assert parse_server("unix:///run/g.sock").address == "unix:/run/g.sock"
    listed = parse_server("unix:a.sock,unix:../b.sock")
    assert listed.gateways == (f"{tmp_path}/a.sock", f"{tmp_path}/../b.sock")
    # Made absolute when parsed: a later chdir does not move it, and the
    # same relative address parsed there is there.
    monkeypatch.chdir("/")
    assert parse_server(listed.url) == listed
    assert parse_server("unix:g.sock").address == "unix:/g.sock"


def test_a_socket_path_longer_than_sun_path_is_refused():
    longest = "/" + "s" * 106
    assert parse_server(f"unix:{longest}").address == f"unix:{longest}"
    with pytest.raises(ValueError, match="108 bytes long; a Unix socket path can be at most 107"):
        parse_server(f"unix:{longest}x")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("grpc://127.0.0.1:1,", "empty"),
        ("grpc://127.0.0.1:1,grpcs://127.0.0.1:2", "one scheme"),
        ("grpc://127.0.0.1:1,unix:/a.sock", "one scheme"),
        ("unix:/a.sock,grpc://127.0.0.1:1", "one scheme"),
        ("grpc://a.example:1,grpc://b.example:1", "dns:///NAME:PORT"),
        ("127.0.0.1:1,[::1]:1", "one family"),
        ("127.0.0.1:1,127.0.0.1:1", "listed twice"),
        ("dns:///a:1,dns:///b:1", "cannot be part of a list"),
        ("dns://8.8.8.8/name:1", "three slashes"),
        ("dns:///name", "port is missing"),
        ("unix:", "path is missing"),
        ("unix://host/path", "no host"),
    ],
)
def test_bad_lists_and_names_say_why(raw, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_server(raw)


@pytest.mark.parametrize(
    ("raw", "loopback"),
    [
        ("grpc://127.0.0.1:1", True),
        ("grpc://127.8.9.10:1", True),
        ("grpc://[::1]:1", True),
        ("grpc://localhost:1", True),
        ("dns:///localhost:1", True),
        ("unix:/run/g.sock", True),
        ("grpc://127.0.0.1:1,127.0.0.2:1", True),
        ("grpc://127.0.0.1:1,10.0.0.1:1", False),
        ("grpc://10.0.0.1:1", False),
        ("grpc://example.com:1", False),
        ("dns:///gateways.default.svc:1", False),
    ],
)
def test_loopback(raw, loopback):
    assert parse_server(raw).is_loopback() is loopback
