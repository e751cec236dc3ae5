"""Several gateways behind one client: gRPC's ``round_robin`` over a list of
addresses or a DNS name, against real gateways on loopback.

Spreading, ``get_workers()`` over every gateway and the per-gateway view, a
gateway SIGKILLed with calls running there (those fail with
``ServerUnavailable``, no other call is lost, new calls go to the others),
the same gateway restarted on its port and used again, TLS and a token with
a list, ``dns:`` targets, and a queue-full refusal sent on to another
gateway. Balancing does not depend on the transport: these run on ``shm``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time

import pytest
import trustme
from conftest import Launcher

from distribute_challenge import AuthenticationError, ServerBusy, ServerUnavailable, compute_this
from distribute_challenge._pb import gateway_pb2

TOKEN = "s3cret-token-for-gateways"
RECONNECT_WAIT = 30.0


def pid():
    return os.getpid()


def hold(seconds):
    time.sleep(seconds)
    return os.getpid()


@pytest.fixture(scope="module")
def shm_launcher(tmp_path_factory) -> Launcher:
    return Launcher("shm", tmp_path_factory)


@pytest.fixture
def start(shm_launcher):
    """``start(n, *flags)``: n fresh gateways, stopped (or reaped) after the test."""
    started = []

    def start_gateways(count: int, *flags: str):
        gateways = [shm_launcher.start(*flags) for _ in range(count)]
        started.extend(gateways)
        return gateways

    yield start_gateways
    for gateway in started:
        if gateway.process.poll() is None:
            shm_launcher.stop(gateway)


@pytest.fixture
def no_env(monkeypatch):
    for name in ("DISTRIBUTE_TOKEN", "DISTRIBUTE_SERVER", "DISTRIBUTE_CA_FILE"):
        monkeypatch.delenv(name, raising=False)


def listed(gateways) -> str:
    return ",".join(gateway.url for gateway in gateways)


def owners(gateways) -> dict[int, int]:
    """Worker pid -> index of its gateway."""
    return {p: i for i, gateway in enumerate(gateways) for p in gateway.worker_pids()}


def busy(gateway) -> int:
    busy_state = gateway_pb2.WORKER_STATE_BUSY
    return sum(worker.state == busy_state for worker in gateway.info().workers)


def test_calls_spread_evenly_over_a_list(start, no_env):
    gateways = start(3)
    remote = compute_this(server=listed(gateways))(pid)
    remote().run()  # connects
    served_before = [gateway.calls_served() for gateway in gateways]
    for _ in range(60):
        remote().run()

    async def concurrently():
        await remote().async_run()  # connects this loop's channel
        return await asyncio.gather(*(remote().async_run() for _ in range(60)))

    asyncio.run(concurrently())
    served = [
        gateway.calls_served() - before
        for gateway, before in zip(gateways, served_before, strict=True)
    ]
    assert sum(served) == 121
    share = sum(served) / len(gateways)
    assert all(0.8 * share <= count <= 1.2 * share for count in served), served


def test_get_workers_counts_every_gateway_and_skips_those_gone(start, no_env):
    first, second, third = start(3, "--workers", "1")
    gateways = [first, second, third]
    remote = compute_this(server=listed(gateways))(pid)
    assert remote.get_workers() == 3
    view = remote.get_gateways()
    assert [answer.target.url for answer in view] == [gateway.url for gateway in gateways]
    assert [answer.count for answer in view] == [1, 1, 1]
    assert {answer.info.transport for answer in view} == {"shm"}

    second.stop()
    assert remote.get_workers() == 2
    down = remote.get_gateways()[1]
    assert down.info is None and isinstance(down.error, ServerUnavailable)
    assert second.url in str(down.error)

    first.stop()
    third.stop()
    with pytest.raises(ServerUnavailable, match="unavailable"):
        remote.get_workers()


def test_a_killed_gateway_fails_only_its_calls_and_is_used_again_once_back(
    start, shm_launcher, no_env
):
    gateways = start(3)
    victim = gateways[1]
    remote = compute_this(server=listed(gateways))

    async def kill_mid_run():
        for _ in range(6):  # every gateway's connection is up: strict rotation from here
            await remote(pid)().async_run()
        running = [asyncio.ensure_future(remote(hold)(3).async_run()) for _ in range(6)]
        deadline = time.monotonic() + 20
        while busy(victim) < 2:
            assert time.monotonic() < deadline, "the calls never reached the victim's workers"
            await asyncio.sleep(0.05)
        victim.process.kill()
        outcomes = await asyncio.gather(*running, return_exceptions=True)
        after = await asyncio.gather(*(remote(pid)().async_run() for _ in range(30)))
        return outcomes, after

    survivors = owners([gateways[0], gateways[2]])
    outcomes, after = asyncio.run(kill_mid_run())
    failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert len(failed) == 2, outcomes  # the victim's two running calls, no other
    for error in failed:
        assert isinstance(error, ServerUnavailable), repr(error)
        assert "went away" in str(error)
    assert all(outcome in survivors for outcome in outcomes if outcome not in failed)
    assert all(worker in survivors for worker in after)  # new calls avoid the dead one
    assert victim.process.wait(10) == -9

    reborn = shm_launcher.start("--listen", f"127.0.0.1:{victim.port}")
    try:
        reborn_workers = reborn.worker_pids()

        async def until_used_again():
            deadline = time.monotonic() + RECONNECT_WAIT
            while time.monotonic() < deadline:
                served = await asyncio.gather(*(remote(pid)().async_run() for _ in range(6)))
                if reborn_workers & set(served):
                    return True
                await asyncio.sleep(0.2)
            return False

        assert asyncio.run(until_used_again()), "the restarted gateway got no call"
    finally:
        shm_launcher.stop(reborn)


@pytest.fixture
def tls_files(tmp_path):
    """One certificate for every gateway: 127.0.0.1 and localhost, by a private CA."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key", "token")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    issued.private_key_pem.write_to_path(str(files["key"]))
    files["cert"].write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    files["token"].write_text(TOKEN + "\n")
    return files


def test_tls_and_a_token_with_a_list(start, tls_files, no_env, monkeypatch):
    flags = ["--tls-cert", str(tls_files["cert"]), "--tls-key", str(tls_files["key"])]
    gateways = start(2, *flags, "--auth-token-file", str(tls_files["token"]))
    server = listed(gateways)
    assert server.startswith("grpcs://") and server.count("grpcs://") == 2
    monkeypatch.setenv("DISTRIBUTE_CA_FILE", str(tls_files["ca"]))
    remote = compute_this(server=server, token=TOKEN)(pid)
    who = owners_via(remote)
    served = collections.Counter(who[remote().run()] for _ in range(20))
    assert set(served) == {0, 1}, served
    assert remote.get_workers() == 4
    with pytest.raises(AuthenticationError):
        compute_this(server=server)(pid)().run()


def owners_via(remote) -> dict[int, int]:
    """Worker pid -> gateway index, through the client's own per-gateway view."""
    return {w.pid: i for i, a in enumerate(remote.get_gateways()) for w in a.info.workers}


def test_a_plaintext_list_on_loopback_takes_a_token(start, tls_files, no_env):
    gateways = start(2, "--auth-token-file", str(tls_files["token"]))
    remote = compute_this(server=listed(gateways), token=TOKEN)(pid)
    assert remote().run() in owners_via(remote)
    assert remote.get_workers() == 4


def test_dns_names(start, tls_files, no_env, monkeypatch):
    (plain,) = start(1)
    remote = compute_this(server=f"dns:///localhost:{plain.port}")(pid)
    assert remote().run() in plain.worker_pids()
    assert asyncio.run(remote().async_run()) in plain.worker_pids()
    assert remote.get_workers() == 2
    (answer,) = remote.get_gateways()
    assert answer.target.address == f"127.0.0.1:{plain.port}"

    flags = ["--tls-cert", str(tls_files["cert"]), "--tls-key", str(tls_files["key"])]
    (secure,) = start(1, *flags)
    monkeypatch.setenv("DISTRIBUTE_CA_FILE", str(tls_files["ca"]))
    remote = compute_this(server=f"grpcs+dns:///localhost:{secure.port}")(pid)
    assert remote().run() > 0  # the certificate is checked against the name, localhost
    assert remote.get_workers() == 2


def test_a_call_refused_as_queue_full_goes_on_to_another_gateway(start, no_env):
    full, free = start(2, "--workers", "1", "--queue-capacity", "1")
    holders = [compute_this(server=full.url)(hold)(4) for _ in range(2)]
    server = listed([full, free])
    retrying = compute_this(server=server)(pid)
    not_retrying = compute_this(server=server, busy_timeout=0)(pid)

    async def scenario():
        held = [asyncio.ensure_future(call.async_run()) for call in holders]
        deadline = time.monotonic() + 20
        while busy(full) < 1 or full.calls_served() > 0:  # one running, one waiting
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        warm = [await retrying().async_run() for _ in range(4)]
        refused = [await _outcome(not_retrying()) for _ in range(4)]
        sent_on = [await retrying().async_run() for _ in range(4)]
        await asyncio.gather(*held)
        return warm, refused, sent_on

    warm, refused, sent_on = asyncio.run(scenario())
    # Without retries, every other call meets the full gateway and is refused...
    assert sum(isinstance(outcome, ServerBusy) for outcome in refused) == 2, refused
    # ...with them, each such call is sent on to the free one.
    assert set(warm + sent_on) <= free.worker_pids()


async def _outcome(call):
    try:
        return await call.async_run()
    except ServerBusy as exc:
        return exc


def test_a_call_no_worker_takes_in_time_goes_on_to_another_gateway(start, no_env):
    slow, free = start(2, "--workers", "1", "--max-queue-wait", "0.2")
    holder = compute_this(server=slow.url)(hold)(3)
    sent_on = compute_this(server=listed([slow, free]), busy_timeout=0)(pid)

    async def scenario():
        held = asyncio.ensure_future(holder.async_run())
        deadline = time.monotonic() + 20
        while busy(slow) < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        # Half of these meet the slow gateway, wait 0.2 s there, are refused
        # as queue-wait (nothing ran) and go on at once, retries or not.
        results = await asyncio.gather(*(sent_on().async_run() for _ in range(6)))
        await held
        return results

    results = asyncio.run(scenario())
    assert set(results) <= free.worker_pids(), results
    assert slow.calls_served() == 1  # the holder alone: no refused call ran
