"""Workers forked from the template, on both transports.

- Workers are forked by the template, yet they are the gateway's children
  (it is a child subreaper), each in its own process group, and they serve.
- The template killed: a new one starts, running workers are untouched, and
  the next replacement worker is forked from the new one.
- A template that cannot start: every worker is started directly and the
  log says so once.
- ``--preload``: the modules are imported once, in the template, before any
  worker serves; a module that fails to import stops the gateway with one
  line naming it (forked or not).
- Recycling: by call count and by resident memory, between calls, counted
  in ``GetWorkers`` and in the metrics, with nothing lost.
- ``GetWorkers`` counts the ready workers.

Crashes with their statuses, timeouts and what SIGTERM/SIGKILL leave behind
are covered for forked workers by ``test_faults.py`` and
``test_shutdown.py``, which run through the template (the default).
"""

from __future__ import annotations

import os
import pathlib
import signal
import stat
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest
from gateway_process import GatewayProcess
from system_state import process_alive, wait_until

from distribute_challenge import compute_this


def pid():
    return os.getpid()


def probe():
    import sys

    module = sys.modules.get("preload_probe")
    return (module.IMPORTED_IN if module else None), os.getpid()


def hold_memory(megabytes):
    """Keeps ``megabytes`` resident in this worker, past the call."""
    import builtins

    block = bytearray(megabytes << 20)
    block[::4096] = b"x" * len(block[::4096])
    builtins._mystic_test_ballast = block
    return os.getpid()


def parent_of(process: int) -> int:
    fields = pathlib.Path(f"/proc/{process}/stat").read_text().rpartition(")")[2].split()
    return int(fields[1])


def group_of(process: int) -> int:
    return os.getpgid(process)


def cmdline(process: int) -> list[str]:
    return pathlib.Path(f"/proc/{process}/cmdline").read_bytes().decode().split("\0")


def children(process: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if parent_of(int(entry)) == process:
                    found.add(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                pass
    return found


def template_of(gateway: GatewayProcess) -> int:
    """The pid of the gateway's template: its child that is not a worker."""
    (template,) = children(gateway.process.pid) - gateway.worker_pids()
    assert "--template" in cmdline(template)
    return template


def test_workers_are_forked_from_the_template_and_are_the_gateways_children(start_gateway):
    gateway = start_gateway("--workers", "3")
    info = gateway.info()
    assert info.ready == 3
    template = template_of(gateway)
    for worker in info.workers:
        assert parent_of(worker.pid) == gateway.process.pid
        assert group_of(worker.pid) == worker.pid
        # A fork of the template: the same command line.
        assert cmdline(worker.pid) == cmdline(template)
    on = compute_this(server=gateway.url)
    served = {on(pid)().run() for _ in range(20)}
    assert served <= gateway.worker_pids()
    assert "worker template ready" in gateway.log()


def test_a_killed_template_is_replaced_and_running_workers_are_untouched(start_gateway):
    gateway = start_gateway("--workers", "2")
    workers = gateway.worker_pids()
    old = template_of(gateway)
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: "new worker template ready" in gateway.log(), "a new template")
    assert "the worker template is gone" in gateway.log() and "SIGKILL" in gateway.log()
    assert gateway.worker_pids() == workers
    on = compute_this(server=gateway.url)
    assert {on(pid)().run() for _ in range(10)} <= workers

    # The next replacement comes from the new template.
    new = template_of(gateway)
    assert new != old
    victim = next(iter(workers))
    os.kill(victim, signal.SIGKILL)
    gateway.wait_for(lambda g: g.restarts() == 1 and g.info().ready == 2, "the replacement")
    (replacement,) = gateway.worker_pids() - workers
    assert parent_of(replacement) == gateway.process.pid
    assert cmdline(replacement) == cmdline(new)


def test_without_a_template_workers_start_directly_and_the_log_says_so_once(launcher, tmp_path):
    # An interpreter that runs workers but cannot run the template.
    python = tmp_path / "python-without-template"
    python.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            for arg in "$@"; do
                [ "$arg" = "--template" ] && {{ echo "no template here" >&2; exit 7; }}
            done
            exec {sys.executable} "$@"
            """
        )
    )
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    gateway = GatewayProcess(
        launcher.binary, launcher.transport, ["--workers", "2"], tmp_path / "gateway"
    )
    gateway.command[gateway.command.index("--python") + 1] = str(python)
    gateway.start()
    try:
        log = gateway.log()
        assert log.count("cannot start the worker template") == 1, log
        assert "exit code 7" in log and "no template here" in log
        for worker in gateway.info().workers:
            assert "--transport" in cmdline(worker.pid)
        on = compute_this(server=gateway.url)
        assert on(pid)().run() in gateway.worker_pids()
        # A replacement is started directly too, without another warning.
        os.kill(next(iter(gateway.worker_pids())), signal.SIGKILL)
        gateway.wait_for(lambda g: g.restarts() == 1 and g.info().ready == 2, "the replacement")
        assert gateway.log().count("cannot start the worker template") == 1
    finally:
        assert gateway.stop() == 0


@pytest.fixture
def probe_module(tmp_path, monkeypatch):
    """A module that records the pid of the process that imported it."""
    directory = tmp_path / "modules"
    directory.mkdir()
    (directory / "preload_probe.py").write_text("import os\nIMPORTED_IN = os.getpid()\n")
    monkeypatch.setenv("PYTHONPATH", str(directory))
    return directory


def test_preloaded_modules_are_imported_once_in_the_template(start_gateway, probe_module):
    gateway = start_gateway("--workers", "2", "--preload", "preload_probe,fractions")
    template = template_of(gateway)
    on = compute_this(server=gateway.url)
    results = {on(probe)().run() for _ in range(10)}
    assert {imported_in for imported_in, _ in results} == {template}
    assert {worker for _, worker in results} <= gateway.worker_pids()


def test_preloading_without_the_template_imports_in_each_worker(start_gateway, probe_module):
    gateway = start_gateway("--workers", "2", "--no-template", "--preload", "preload_probe")
    on = compute_this(server=gateway.url)
    for imported_in, worker in {on(probe)().run() for _ in range(10)}:
        assert imported_in == worker


@pytest.mark.parametrize("template", [True, False], ids=["template", "direct"])
def test_a_module_that_fails_to_preload_stops_the_gateway_naming_it(launcher, tmp_path, template):
    flags = ["--workers", "2", "--preload", "json,no_such_module_here"]
    if not template:
        flags.append("--no-template")
    gateway = GatewayProcess(launcher.binary, launcher.transport, flags, tmp_path)
    with pytest.raises(RuntimeError, match="before serving"):
        gateway.start()
    assert gateway.process.returncode != 0
    errors = [line for line in gateway.log().splitlines() if "ERROR" in line or "error" in line]
    assert any("no_such_module_here" in line for line in errors), gateway.log()
    assert not children(gateway.process.pid)


def test_a_bad_preload_name_is_refused_by_the_command_line(launcher):
    done = subprocess.run(
        [str(launcher.binary), "--preload", "os,not a module"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "`not a module` is not a module name" in done.stderr


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def recycled_total(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mystic_worker_restarts_total{") and 'reason="recycled"' in line
    )


def test_workers_are_recycled_after_max_calls(start_gateway):
    from test_monitoring import free_port

    port = free_port()
    gateway = start_gateway(
        "--workers", "1", "--max-calls-per-worker", "3", "--metrics-listen", f"127.0.0.1:{port}"
    )
    on = compute_this(server=gateway.url)
    served = [on(pid)().run() for _ in range(10)]
    # Calls 1-3 on one process, 4-6 on the next, and so on: none lost.
    runs = [served[start : start + 3] for start in range(0, 10, 3)]
    assert all(len(set(run)) == 1 for run in runs), served
    assert len(set(served)) == 4, served
    gateway.wait_for(lambda g: g.info().workers[0].recycled == 3, "three recycles")
    (worker,) = gateway.info().workers
    assert worker.restarts == 3
    assert worker.calls_served == 10
    assert recycled_total(metrics(port)) == 3
    # The old processes are gone, not left behind.
    wait_until(lambda: not any(process_alive(p) for p in set(served[:9])), "old workers to exit")


def test_a_worker_past_max_rss_is_recycled_after_that_call(start_gateway):
    gateway = start_gateway("--workers", "1", "--max-worker-rss-bytes", str(200 << 20))
    on = compute_this(server=gateway.url)
    first = on(pid)().run()
    assert on(pid)().run() == first  # small: not recycled
    assert on(hold_memory)(300).run() == first  # served, then recycled
    after = on(pid)().run()
    assert after != first
    assert on(pid)().run() == after
    (worker,) = gateway.info().workers
    assert worker.recycled == 1


def test_get_workers_counts_the_ready_ones(start_gateway):
    gateway = start_gateway("--workers", "2")
    assert gateway.info().ready == 2
    # With the template stopped, a dead worker's replacement cannot start.
    template = template_of(gateway)
    os.kill(template, signal.SIGSTOP)
    try:
        os.kill(next(iter(gateway.worker_pids())), signal.SIGKILL)
        gateway.wait_for(lambda g: g.restarts() == 1, "the slot to restart")
        time.sleep(0.5)
        info = gateway.info()
        assert (info.count, info.ready) == (2, 1)
    finally:
        os.kill(template, signal.SIGCONT)
    gateway.wait_for(lambda g: g.info().ready == 2, "the replacement")


def test_a_template_that_stops_answering_is_replaced(start_gateway):
    gateway = start_gateway("--workers", "2", "--startup-timeout", "2")
    old = template_of(gateway)
    os.kill(old, signal.SIGSTOP)
    os.kill(next(iter(gateway.worker_pids())), signal.SIGKILL)
    gateway.wait_for(
        lambda g: g.restarts() >= 1 and g.info().ready == 2, "a replacement from a new template", 30
    )
    assert "did not answer a fork request within 2s" in gateway.log()
    assert not process_alive(old)
    assert template_of(gateway) != old


def leave_children_and_die(seconds):
    """Starts one child in a session of its own and one in the worker's
    group, then kills the worker."""
    import subprocess

    subprocess.Popen(["sleep", str(seconds)], start_new_session=True)
    subprocess.Popen(["sleep", "60"])
    os._exit(1)


def test_what_a_dead_worker_leaves_is_reaped_by_the_gateway(start_gateway):
    from distribute_challenge import WorkerCrashed

    gateway = start_gateway("--workers", "1")
    with pytest.raises(WorkerCrashed):
        compute_this(server=gateway.url)(leave_children_and_die)(1.5).run()
    gateway.wait_for(lambda g: g.restarts() == 1 and g.info().ready == 1, "the replacement")
    # The detached child outlived its worker: it is the gateway's now.
    (detached,) = [
        child for child in children(gateway.process.pid) if cmdline(child)[:2] == ["sleep", "1.5"]
    ]
    # Once it exits it is reaped, and nothing else stays a zombie either.
    wait_until(lambda: not os.path.exists(f"/proc/{detached}"), "the detached child to be reaped")
    zombies = [child for child in children(gateway.process.pid) if not process_alive(child)]
    assert zombies == [], zombies
