"""Smoke test of the end-to-end benchmark harness
(`benches/python/pool_baseline.py`): a tiny run on both transports and the
ProcessPoolExecutor baseline prints the whole table. It checks that the
harness works, not how fast anything is."""

from __future__ import annotations

import subprocess
import sys

from gateway_process import REPO, gateway_binary

HARNESS = REPO / "benches" / "python" / "pool_baseline.py"


def test_pool_baseline_harness_prints_every_row():
    tiny = ["--workers", "2", "--calls", "20", "--throughput-calls", "200"]
    tiny += ["--echo-mib", "1", "--echo-repeats", "1"]
    finished = subprocess.run(
        [sys.executable, str(HARNESS), *tiny],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.splitlines()
    assert lines[0] == (
        "| workload | ProcessPoolExecutor | pipe | shm | pipe / pool | shm / pool |"
    )
    rows = [line for line in lines[2:] if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| no-op latency p50 (20 calls)",
        "| no-op latency p99 (20 calls)",
        "| 200 no-op calls at once, 2 workers",
        "| 1 MiB echo (median of 1)",
    ]
    assert all(row.count("x |") == 2 for row in rows), rows
    assert any(line.startswith("command: ") for line in lines)


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
