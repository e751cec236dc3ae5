"""Server addresses and tokens (``distribute_challenge._target``), and the
decorator's argument checks, without a gateway."""

import pytest

from distribute_challenge import compute_this
from distribute_challenge._target import Target, parse_server, resolve_server, resolve_token


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
