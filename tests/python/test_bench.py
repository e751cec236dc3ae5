"""Smoke tests of the end-to-end benchmark harnesses: a tiny run of
`benches/python/compare.py` (every contestant, every table), of `map.py`
and `executor.py` (every section and its targets), of `large.py` (every
section, without Ray), of `startup.py`, `breakdown.py`,
`small_calls.py`, `hops.py` (and what `call_profile.py` makes of a
profile), and of the workers' harnesses (`replacement.py`,
`worker_memory.py`, `preload.py`). They check that the
harnesses work, not how fast anything is."""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
from gateway_process import REPO, gateway_binary

BENCHES = REPO / "benches" / "python"
HARNESS = BENCHES / "compare.py"
LATENCY_HEADER = "| contestant | p50 | p99 | p99 / p50 | p50 / pool | p50 / grpc-echo |"
BURST_HEADER = "| contestant | calls/s (median) | min-max | rate / pool |"


def echo_server_binary() -> pathlib.Path | None:
    """``$MYSTIC_ECHO_SERVER_BIN``, else the example built beside the gateway,
    else the checkout's; None when none is built."""
    gateway = gateway_binary()
    candidates = [os.environ.get("MYSTIC_ECHO_SERVER_BIN")]
    candidates += [gateway and gateway.parent / "examples" / "echo_server"]
    candidates += [REPO / "target" / "release" / "examples" / "echo_server"]
    return next((pathlib.Path(c) for c in candidates if c and pathlib.Path(c).is_file()), None)


def test_compare_harness_prints_every_table(tmp_path):
    contestants = ["pipe", "shm", "shm-unix", "pool"]
    env = dict(os.environ)
    echo_server = echo_server_binary()
    if echo_server is not None:  # not built by `make test`: then the run goes without it
        contestants.append("grpc-echo")
        env["MYSTIC_ECHO_SERVER_BIN"] = str(echo_server)
    tiny = ["--quick", "--workers", "2", "--calls", "5", "--warmup", "2", "--burst", "50"]
    tiny += ["--concurrency", "4", "--sizes", "1K,4K", "--json", str(tmp_path / "run.json")]
    finished = subprocess.run(
        [sys.executable, str(HARNESS), *tiny, "--contestants", *contestants],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,  # not the checkout: `python -m worker_shim` puts the cwd first on sys.path
    )
    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.splitlines()
    assert lines[0].startswith("`") and "benches/python/compare.py --quick" in lines[0]
    for start in ("- commit ", "- gateway ", "- load average before ", "- contestants: "):
        assert any(line.startswith(start) for line in lines), start
    ran = json.loads((tmp_path / "run.json").read_text())["contestants"]
    skipped = [line for line in lines if line.startswith("- skipped: ")]
    # shm-unix runs where the gateway takes `--listen unix:PATH`, else is skipped, saying why.
    assert ran == [name for name in contestants if name != "shm-unix" or not skipped], skipped
    assert all(line.startswith("- skipped: shm-unix: ") for line in skipped), skipped

    assert lines.count(LATENCY_HEADER) == 2  # the no-op and the 1 KiB echo
    assert lines.count(BURST_HEADER) == 1
    assert lines.count("| payload | " + " | ".join(ran) + " | shm / pipe |") == 2
    for name in ran:  # two latency tables and the burst
        assert sum(line.startswith(f"| {name} | ") for line in lines) == 3, name
    for size in ("1 KiB", "4 KiB"):  # round trips and throughput
        rows = [line for line in lines if line.startswith(f"| {size} | ")]
        assert len(rows) == 2 and all(row.endswith("x |") for row in rows), rows


MAP_TABLES = {
    "throughput": "| contestant | calls/s (median) | min-max | / pool submit | / best pool.map |",
    "memory": "| transport | calls | calls/s | client VmHWM before the map | after | client "
    "ru_maxrss after | gateway VmHWM at start | after | of which rings | gateway less rings |",
    "sleeps": "| factor | calls | ideal FIFO (median) | pipe real (median) | pipe ideal / real "
    "| min-max | shm real (median) | shm ideal / real | min-max |",
    "stream": "| transport | items/s (median) | min-max | / pipe |",
    "targets": "| target | pipe | shm | met |",
}


def table_rows(lines: list[str], header: str) -> list[list[str]]:
    """The cells of each row of the table under `header`."""
    start = lines.index(header) + 2  # past the alignment row
    rows = itertools.takewhile(lambda line: line.startswith("| "), lines[start:])
    return [row.strip("| ").split(" | ") for row in rows]


def test_map_harness_prints_every_section_and_its_targets(tmp_path):
    tiny = ["--quick", "--workers", "2", "--memory-sizes", "500,1000"]
    finished = subprocess.run(
        [sys.executable, str(REPO / "benches" / "python" / "map.py"), *tiny]
        + ["--json", str(tmp_path / "run.json")],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, MYSTIC_GATEWAY_BIN=str(gateway_binary())),
        cwd=tmp_path,
    )
    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.splitlines()
    assert lines[0].startswith("`") and "benches/python/map.py --quick" in lines[0]
    for start in ("- commit ", "- gateway ", "- load average before ", "- 2 workers "):
        assert any(line.startswith(start) for line in lines), start
    tables = {name: table_rows(lines, header) for name, header in MAP_TABLES.items()}

    contestants = [row[0].strip("*") for row in tables["throughput"]]
    assert contestants == ["pipe map", "shm map", "pool submit"] + [
        f"pool.map chunksize={size}" for size in (1, 100)
    ]
    assert sum(row[0].startswith("**") for row in tables["throughput"]) == 1  # the best pool.map
    assert [row[:2] for row in tables["memory"]] == [
        ["pipe", "500"],
        ["shm", "500"],
        ["pipe", "1,000"],
        ["shm", "1,000"],
    ]
    assert [row[:2] for row in tables["sleeps"]] == [["1", "2"], ["2", "4"]]
    assert [row[0] for row in tables["stream"]] == ["pipe", "shm"]
    assert len(tables["targets"]) == 5  # throughput, client and gateway RSS, sleeps, stream
    assert all(row[-1] in ("yes", "**no**") for row in tables["targets"])

    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["sections"] == ["throughput", "memory", "sleeps", "stream"]
    assert len(summary["memory"]) == 4 and len(summary["sleeps"]) == 4
    assert summary["best_pool_map"] in contestants


LARGE_TABLES = {
    "echo": "| contestant | median | p99 | p99 / median | median / pool |",
    "array": "| contestant | median | min-max | median / pool |",
    "sum": "| contestant | median | min-max | / local | <= 1.5 * local + 50 ms (",
    "rss": "| contestant | VmHWM before | VmHWM after | after / array "
    "| (after - before) / array | round trip |",
    "sweep": "| payload | pipe | shm | pool | shm / shm-inline |",
    "targets": "| target | pipe | shm | shm-inline | met |",
}


def test_large_harness_prints_every_section_and_its_targets(tmp_path):
    pytest.importorskip("numpy")  # the harness's arrays
    contestants = ["pipe", "shm", "pool"]
    finished = subprocess.run(
        [sys.executable, str(REPO / "benches" / "python" / "large.py"), "--quick"]
        + ["--workers", "2", "--contestants", ",".join(contestants)]
        + ["--json", str(tmp_path / "run.json")],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, MYSTIC_GATEWAY_BIN=str(gateway_binary())),
        cwd=tmp_path,
    )
    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.splitlines()
    assert lines[0].startswith("`") and "benches/python/large.py --quick" in lines[0]
    for start in ("- commit ", "- gateway ", "- load average before ", "- contestants: "):
        assert any(line.startswith(start) for line in lines), start
    assert not any(line.startswith("- **failed**") for line in lines), lines
    # Each header found (the sum's ends with its bound), its rows under it.
    tables = {}
    for name, header in LARGE_TABLES.items():
        found = [line for line in lines if line.startswith(header)]
        assert len(found) == (2 if name == "sweep" else 1), (name, lines)  # median and p99
        tables[name] = table_rows(lines, found[0])
    for name in ("echo", "array", "rss"):
        assert [row[0] for row in tables[name]] == contestants, name
    assert [row[0] for row in tables["sum"]] == ["local np.sum", *contestants]
    assert [row[0] for row in tables["sweep"]] == ["1 KiB", "64 KiB", "1 MiB"]
    assert len(tables["targets"]) == 6  # echo over ray and pool, array, sum, RSS, small echo
    assert all(row[-1] in ("yes", "**no**", "-") for row in tables["targets"])

    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["contestants"] == contestants and not summary["failures"]
    assert summary["sections"] == ["echo", "array", "sum", "rss", "sweep"]
    assert sorted(summary["rss"]) == sorted(contestants)


def test_startup_harness_times_each_setup_on_each_transport(tmp_path):
    gateway = gateway_binary()
    finished = subprocess.run(
        [sys.executable, str(REPO / "benches" / "python" / "startup.py"), "--workers", "2"]
        + ["--rounds", "1", "--setup", f"a={gateway}", "--setup", f"b={gateway}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert finished.returncode == 0, finished.stderr
    summary = finished.stdout.split("median (min-max) seconds until serving\n")[1]
    names = [line.replace(":", "").split()[:2] for line in summary.splitlines()]
    assert names == [["a", "pipe"], ["b", "pipe"], ["a", "shm"], ["b", "shm"]]


def test_breakdown_harness_prints_every_part(tmp_path):
    echo_server = echo_server_binary()
    if echo_server is None:
        pytest.skip("the echo server example is not built")
    env = dict(os.environ, MYSTIC_ECHO_SERVER_BIN=str(echo_server))
    finished = subprocess.run(
        [sys.executable, str(REPO / "benches" / "python" / "breakdown.py")]
        + ["--calls", "5", "--rounds", "1", "--gateway", str(gateway_binary())],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert finished.returncode == 0, finished.stderr
    rows = [line.split(" | ")[0] for line in finished.stdout.splitlines() if line.startswith("| ")]
    assert rows[0] == "| part"
    assert [row.removeprefix("| ").split(" (")[0] for row in rows[1:]] == [
        "client",
        "gRPC hop",
        "gateway",
        "worker leg",
        "worker",
        "**end to end, p50**",
    ]


def run_harness(tmp_path, script: str, *args: str) -> list[str]:
    """Runs ``benches/python/<script>`` with ``args`` on the tested gateway;
    its stdout lines."""
    finished = subprocess.run(
        [sys.executable, str(REPO / "benches" / "python" / script)]
        + ["--binary", str(gateway_binary()), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout.splitlines()


def test_replacement_harness_times_each_crash(tmp_path):
    lines = run_harness(tmp_path, "replacement.py", "--workers", "2", "--crashes", "2")
    summary = [line.replace(":", "").split() for line in lines[-2:]]
    assert [row[:2] for row in summary] == [["template", "pipe"], ["template", "shm"]], lines
    assert all(row[-1] == "2" for row in summary), lines  # crashes timed


def test_worker_memory_harness_reports_every_column(tmp_path):
    lines = run_harness(tmp_path, "worker_memory.py", "--workers", "2", "--transports", "pipe")
    header, row = lines[0].split(), lines[1].split()
    assert header[:2] == ["workers", "procs"], lines
    assert row[:4] == ["template", "pipe", "2", "4"], row  # gateway, template, 2 workers
    # Seconds to serve, then total and per worker for Pss, private, RSS, system.
    assert len(row) == 4 + 1 + 2 * 4, row
    assert all(cell.replace(".", "", 1).lstrip("-").isdigit() for cell in row[4:]), row


def test_preload_harness_compares_with_and_without(tmp_path):
    lines = run_harness(tmp_path, "preload.py", "--rounds", "1")
    if lines and lines[0].startswith("skipped: numpy"):
        pytest.skip(lines[0])
    assert [line.split(":")[0].strip() for line in lines[-2:]] == ["without", "with"], lines


def test_map_cpu_harness_splits_each_calls_cpu_time(tmp_path):
    lines = run_harness(tmp_path, "map_cpu.py", "--calls", "500", "--rounds", "1", "--workers", "2")
    assert lines[0].split("|")[1:-1] == [
        " transport ",
        " calls/s ",
        " client ",
        " gateway ",
        " 2 workers ",
    ], lines
    rows = [line.split("|")[1:-1] for line in lines[2:]]
    assert [row[0].strip() for row in rows] == ["pipe", "shm"], lines
    for row in rows:
        assert all(cell.strip().endswith("µs") for cell in row[2:]), row


LATENCY_TABLE = "| transport | run p50 | run p99 | submit p50 | submit p99 | submit / run |"
SLEEPS_TABLE = "| factor | tasks | pipe | shm | loky |"


def test_executor_harness_prints_every_section_and_its_targets(tmp_path):
    finished = subprocess.run(
        [sys.executable, str(REPO / "benches" / "python" / "executor.py"), "--quick"]
        + ["--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, MYSTIC_GATEWAY_BIN=str(gateway_binary())),
        cwd=tmp_path,
    )
    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.splitlines()
    assert lines[0].startswith("`") and "benches/python/executor.py --quick" in lines[0]
    latency = table_rows(lines, LATENCY_TABLE)
    assert [row[0] for row in latency] == ["pipe", "shm"]
    tiny = table_rows(lines, "| backend | median | min-max | / loky |")
    assert [row[0] for row in tiny] == ["pipe", "shm", "loky"]
    assert [row[:2] for row in table_rows(lines, SLEEPS_TABLE)] == [["1", "2"]]
    targets = table_rows(lines, "| target | goal | figure | met |")
    assert len(targets) == 3 and all(row[-1] in ("yes", "**no**") for row in targets)


def test_small_calls_harness_reports_every_set_up(tmp_path):
    # The same checkout twice (once with a gateway flag): the harness, not a
    # difference, is under test.
    finished = subprocess.run(
        [sys.executable, str(REPO / "benches" / "python" / "small_calls.py")]
        + ["--version", f"a={REPO}", "--version", f"b={REPO} --runtime-threads 1"]
        + ["--transport", "pipe", "--transport", "shm", "--rounds", "1"]
        + ["--calls", "5", "--burst", "20", "--map", "20"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert finished.returncode == 0, finished.stderr
    rows = [line.split(" | ")[0] for line in finished.stdout.splitlines() if line.startswith("| ")]
    assert rows == [
        "| set-up",
        "| a pipe",
        "| a shm",
        "| b pipe",
        "| b shm",
        "| ProcessPoolExecutor(4)",
    ]


def test_hops_harness_shows_every_hop(tmp_path):
    finished = subprocess.run(
        [sys.executable, str(REPO / "benches" / "python" / "hops.py")]
        + ["--transport", "pipe", "--calls", "20", "--checkout", str(REPO)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert finished.returncode == 0, finished.stderr
    rows = [line for line in finished.stdout.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows][1:] == [
        "received",
        "queued",
        "picked",
        "written",
        "read",
        "replied",
        "returned",
    ]


def test_call_profile_groups_samples_by_process_and_component():
    # The run itself needs perf allowed to sample the machine; what it
    # makes of perf's report is checked on a report of known samples.
    code = textwrap.dedent('''
        import json, call_profile
        report = """
            40.00%      0:swapper  [kernel.kallsyms]     [k] pv_native_safe_halt
            10.00%     11:python   libpython3.11.so.1.0  [.] _PyEval_EvalFrameDefault
             5.00%     22:tokio-rt mysticchallenge       [.] h2::hpack::encoder::Encoder::encode
             4.00%     22:tokio-rt [kernel.kallsyms]     [k] futex_wake
             3.00%     22:tokio-rt [kernel.kallsyms]     [k] tcp_sendmsg_locked
             2.00%     33:python   _native.abi3.so       [.] tokio::runtime::park::Inner::park
             1.00%     44:kworker  [kernel.kallsyms]     [k] memcpy_orig
        """
        roles = {11: "client", 22: "gateway", 33: "workers"}
        found = call_profile.shares(report, roles)
        print(json.dumps(sorted([*key, value] for key, value in found.items())))
    ''')
    finished = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=BENCHES,
    )
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout) == [
        ["client", "Python interpreter", 10.0],
        ["gateway", "HTTP/2 and gRPC", 5.0],
        ["gateway", "kernel: TCP and sockets", 3.0],
        ["gateway", "kernel: scheduling and wake-ups", 4.0],
        ["idle", "", 40.0],
        ["other", "kernel: other", 1.0],
        ["workers", "tokio", 2.0],
    ]


def test_a_block_for_another_checkout_imports_that_checkouts_client(tmp_path):
    # How harness.run_block runs a block of another checkout: this
    # repository's benchmark script, that checkout first on PYTHONPATH.
    other = tmp_path / "checkout"
    (other / "distribute_challenge").mkdir(parents=True)
    (other / "distribute_challenge" / "__init__.py").write_text("")
    code = "import harness, distribute_challenge; print(distribute_challenge.__file__)"
    finished = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path[0] = {str(BENCHES)!r}; {code}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(other)),
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == str(other / "distribute_challenge" / "__init__.py")
