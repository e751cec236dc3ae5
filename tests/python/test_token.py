"""The token and where it may go (``distribute_challenge._token``): never in
plaintext beyond this host unless the caller opts in. These tests build the
call's request (``Call._prepare``) and stop before anything is dialled: no
address here is ever connected to."""

import pytest

from distribute_challenge import compute_this
from distribute_challenge._target import parse_server
from distribute_challenge._token import PLAINTEXT_TOKEN_ENV, authorization

REMOTE_PLAINTEXT = "grpc://gateway.example:8000"
BEARER = (("authorization", "Bearer t0ken"),)


def square(x):
    return x * x


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    monkeypatch.delenv(PLAINTEXT_TOKEN_ENV, raising=False)
    monkeypatch.delenv("DISTRIBUTE_TOKEN", raising=False)


@pytest.mark.parametrize(
    "server",
    [
        "grpc://127.0.0.1:8000",
        "grpc://localhost:8000",
        "grpc://[::1]:8000",
        "grpc://127.0.0.1:1,127.0.0.2:1",
        "dns:///localhost:8000",
        "unix:/run/gateway.sock",
        "grpcs://gateway.example:8000",
        "grpcs+dns:///gateways.default.svc:8000",
    ],
)
def test_the_token_goes_to_loopback_and_over_tls(server):
    call = compute_this(server=server, token="t0ken")(square)(3)
    assert call._prepare().metadata == BEARER


@pytest.mark.parametrize(
    "server",
    [
        REMOTE_PLAINTEXT,
        "grpc://10.1.2.3:8000",
        "grpc://127.0.0.1:1,10.1.2.3:1",
        "dns:///gateways.default.svc:8000",
    ],
)
def test_plaintext_beyond_this_host_is_refused_naming_the_opt_ins(server):
    call = compute_this(server=server, token="t0ken")(square)(3)
    with pytest.raises(ValueError, match="plaintext") as raised:
        call._prepare()
    message = str(raised.value)
    assert "insecure_plaintext_token=True" in message
    assert f"${PLAINTEXT_TOKEN_ENV}=1" in message
    assert "grpcs://" in message


def test_a_token_from_the_environment_is_refused_too(monkeypatch):
    monkeypatch.setenv("DISTRIBUTE_TOKEN", "t0ken")
    with pytest.raises(ValueError, match="plaintext"):
        compute_this(server=REMOTE_PLAINTEXT)(square)(3)._prepare()
    with pytest.raises(ValueError, match="plaintext"):
        compute_this(server=REMOTE_PLAINTEXT)(square).get_gateways()


def test_without_a_token_nothing_is_refused():
    assert compute_this(server=REMOTE_PLAINTEXT)(square)(3)._prepare().metadata == ()


def test_the_argument_opts_in():
    remote = compute_this(server=REMOTE_PLAINTEXT, token="t0ken", insecure_plaintext_token=True)
    assert remote(square)(3)._prepare().metadata == BEARER


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_the_environment_opts_in(monkeypatch, value):
    monkeypatch.setenv(PLAINTEXT_TOKEN_ENV, value)
    call = compute_this(server=REMOTE_PLAINTEXT, token="t0ken")(square)(3)
    assert call._prepare().metadata == BEARER


@pytest.mark.parametrize("value", ["0", "false", ""])
def test_the_environment_can_say_no(monkeypatch, value):
    monkeypatch.setenv(PLAINTEXT_TOKEN_ENV, value)
    with pytest.raises(ValueError, match="plaintext"):
        authorization(parse_server(REMOTE_PLAINTEXT), "t0ken")


def test_an_unclear_environment_value_says_what_to_write(monkeypatch):
    monkeypatch.setenv(PLAINTEXT_TOKEN_ENV, "maybe")
    with pytest.raises(ValueError, match="set it to 1"):
        authorization(parse_server(REMOTE_PLAINTEXT), "t0ken")
