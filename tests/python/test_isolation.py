"""Processes closed to each other, on both transports: the gateway, the
template and every worker are not dumpable, so a function, which runs as
their user, cannot open their descriptors (rings, segments, sockets)
through ``/proc/<pid>/fd``; ``--debuggable`` opens them again.

Root may open any process's descriptors whatever it does, so when the suite
runs as root the gateway runs in a user namespace as an ordinary user (the
same files, no capabilities), which is what the property is about."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest
from gateway_process import GatewayProcess
from system_state import descendants

from distribute_challenge import compute_this


def as_ordinary_user() -> tuple[str, ...]:
    """The command prefix that runs the gateway without privileges."""
    if os.geteuid() != 0:
        return ()
    unshare = shutil.which("unshare")
    wrapper = (unshare, "--user", "--map-user=65534", "--map-group=65534") if unshare else ()
    if not unshare or subprocess.run([*wrapper, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root, and cannot start an unprivileged user namespace")
    return wrapper


@pytest.fixture
def ordinary_gateway(launcher, tmp_path):
    started = []

    def start(*flags: str) -> GatewayProcess:
        gateway = GatewayProcess(
            launcher.binary,
            launcher.transport,
            list(flags),
            tmp_path / str(len(started)),
            wrapper=as_ordinary_user(),
        )
        started.append(gateway.start())
        return gateway

    yield start
    for gateway in started:
        launcher.stop(gateway)


def open_their_descriptors(pids: dict[str, int]) -> dict[str, int]:
    """In the worker: how many descriptors of each other process it opens."""
    import os

    opened = {}
    for name, pid in pids.items():
        if pid == os.getpid():
            continue
        count = 0
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            fds = []
        for fd in fds:
            try:
                os.close(os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY))
            except OSError:
                continue
            count += 1
        opened[name] = count
    return opened


def everyone(gateway: GatewayProcess) -> dict[str, int]:
    pid = gateway.process.pid
    processes = {"gateway": pid}
    for child in descendants(pid):
        cmdline = pathlib.Path(f"/proc/{child}/cmdline").read_bytes()
        if b"--template" in cmdline and child not in gateway.worker_pids():
            processes["template"] = child
    for index, worker in enumerate(sorted(gateway.worker_pids())):
        processes[f"worker {index}"] = worker
    return processes


def test_a_function_cannot_open_other_processes_descriptors(ordinary_gateway):
    gateway = ordinary_gateway()
    processes = everyone(gateway)
    assert "template" in processes and len(processes) == 4
    remote = compute_this(server=gateway.url)(open_their_descriptors)
    for _ in range(4):  # whichever worker runs it
        opened = remote(processes).run()
        assert len(opened) == 3
        assert opened == dict.fromkeys(opened, 0), opened


def test_debuggable_leaves_them_open(ordinary_gateway):
    gateway = ordinary_gateway("--debuggable")
    remote = compute_this(server=gateway.url)(open_their_descriptors)
    opened = remote(everyone(gateway)).run()
    assert opened["gateway"] > 0 and opened["template"] > 0, opened


def tamper():
    """Leaves state behind in the worker for whoever calls next."""
    import json

    json.dumps = lambda *args, **kwargs: "tampered"
    return "done"


def encode(value):
    import json

    return json.dumps(value)


def test_a_function_shares_its_worker_with_later_calls_unless_each_gets_its_own(start_gateway):
    """What the design cannot prevent, and the remedy SECURITY.md names: a
    function can change what later calls on its worker run; with
    ``--max-calls-per-worker 1`` every call gets a fresh worker."""
    shared = start_gateway("--workers", "1")
    assert compute_this(server=shared.url)(tamper)().run() == "done"
    assert compute_this(server=shared.url)(encode)([1]).run() == "tampered"

    fresh = start_gateway("--workers", "1", "--max-calls-per-worker", "1")
    assert compute_this(server=fresh.url)(tamper)().run() == "done"
    assert compute_this(server=fresh.url)(encode)([1]).run() == "[1]"
