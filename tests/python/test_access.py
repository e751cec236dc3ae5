"""Who may call, and what one call may take: bearer tokens, TLS with a private
CA, the refusal to listen beyond loopback without a token, and the worker
memory cap. Each on both transports, against real gateways."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from distribute_challenge import AuthenticationError, ServerUnavailable, compute_this

TOKEN = "s3cret-token-for-tests"


def double(x):
    return 2 * x


def allocate_without_bound():
    hoard = []
    while True:
        hoard.append(bytearray(64 << 20))


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def no_env_token(monkeypatch):
    monkeypatch.delenv("DISTRIBUTE_TOKEN", raising=False)


def test_calls_need_the_right_token(start_gateway, token_file, no_env_token, monkeypatch):
    gateway = start_gateway("--auth-token-file", str(token_file))
    anonymous = compute_this(server=gateway.url)(double)
    with pytest.raises(AuthenticationError, match="token"):
        anonymous(2).run()
    wrong = compute_this(server=gateway.url, token=TOKEN + "x")(double)
    with pytest.raises(AuthenticationError):
        asyncio.run(wrong(2).async_run())
    with pytest.raises(AuthenticationError):
        wrong.get_workers()
    with pytest.raises(AuthenticationError):
        list(anonymous.map([1, 2]))

    right = compute_this(server=gateway.url, token=TOKEN)(double)
    assert right(21).run() == 42
    assert asyncio.run(right(4).async_run()) == 8
    assert list(right.map([1, 2])) == [2, 4]
    assert right.get_workers() == 2
    monkeypatch.setenv("DISTRIBUTE_TOKEN", TOKEN)
    assert anonymous(5).run() == 10


def test_health_answers_without_a_token(start_gateway, token_file):
    gateway = start_gateway("--auth-token-file", str(token_file))
    with grpc.insecure_channel(gateway.url.removeprefix("grpc://")) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"\n", "is empty"), ("caf\u00e9\n".encode(), "cannot send in a header")],
    ids=["empty", "non-ascii"],
)
def test_an_unusable_token_file_stops_the_gateway_with_a_reason(
    launcher, tmp_path, content, reason
):
    path = tmp_path / "token"
    path.write_bytes(content)
    result = run_gateway(launcher, "--auth-token-file", str(path))
    assert result.returncode != 0
    assert reason in result.stderr
    assert result.stdout == ""


def test_unusable_tls_files_stop_the_gateway_before_it_serves(launcher, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    result = run_gateway(launcher, "--tls-cert", str(junk), "--tls-key", str(junk))
    assert result.returncode != 0
    assert "TLS certificate or key cannot be used" in result.stderr
    assert result.stdout == ""


def test_listening_beyond_loopback_without_a_token_is_refused(launcher):
    result = run_gateway(launcher, "--listen", "0.0.0.0:0")
    assert result.returncode == 2, result.stderr
    assert "--auth-token-file" in result.stderr
    assert "--insecure-allow-remote-without-token" in result.stderr
    assert result.stdout == ""


def run_gateway(launcher, *flags: str) -> subprocess.CompletedProcess[str]:
    """Runs a gateway expected to refuse to start."""
    command = [str(launcher.binary), "--transport", launcher.transport, "--workers", "1"]
    command += ["--python", sys.executable]
    if "--listen" not in flags:
        command += ["--listen", "127.0.0.1:0"]
    return subprocess.run(
        [*command, *flags], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def tls_files(tmp_path):
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    issued.private_key_pem.write_to_path(str(files["key"]))
    files["cert"].write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    return files


def test_tls_with_a_private_ca_and_a_token(
    start_gateway, tls_files, token_file, no_env_token, monkeypatch
):
    gateway = start_gateway(
        "--tls-cert",
        str(tls_files["cert"]),
        "--tls-key",
        str(tls_files["key"]),
        "--auth-token-file",
        str(token_file),
    )
    assert gateway.url.startswith("grpcs://")
    monkeypatch.setenv("DISTRIBUTE_CA_FILE", str(tls_files["ca"]))
    remote = compute_this(server=gateway.url, token=TOKEN)(double)
    assert remote(3).run() == 6
    assert asyncio.run(remote(5).async_run()) == 10
    with pytest.raises(AuthenticationError):
        compute_this(server=gateway.url)(double)(1).run()

    # Neither plaintext nor an untrusted certificate gets through.
    plaintext = gateway.url.replace("grpcs://", "grpc://")
    with pytest.raises(ServerUnavailable):
        compute_this(server=plaintext, token=TOKEN, timeout=20)(double)(1).run()
    monkeypatch.delenv("DISTRIBUTE_CA_FILE")
    with pytest.raises(ServerUnavailable):
        compute_this(server=gateway.url, token=TOKEN, timeout=20)(double)(1).run()


def test_a_worker_memory_cap_turns_runaway_allocation_into_memory_error(start_gateway):
    gateway = start_gateway("--worker-memory-bytes", str(1 << 30))
    with pytest.raises(MemoryError):
        compute_this(server=gateway.url)(allocate_without_bound)().run()
    assert compute_this(server=gateway.url)(double)(2).run() == 4
    assert gateway.restarts() == 0


def test_a_memory_cap_too_small_for_the_rings_stops_the_gateway_with_a_reason(launcher):
    if launcher.transport != "shm":
        pytest.skip("the pipe transport maps no rings")
    # The smallest cap accepted cannot hold two 32 MiB rings and Python.
    result = run_gateway(
        launcher, "--worker-memory-bytes", str(64 << 20), "--ring-bytes", str(32 << 20)
    )
    assert result.returncode != 0
    assert "--worker-memory-bytes" in result.stderr
    assert result.stdout == ""
