"""test_load.py, run as a subprocess with a small workload: against the suite's
gateway on each transport, and with ``--compare`` on gateways it starts itself.
Its figures are checked for sanity (bounds, sums), never for speed."""

from __future__ import annotations

import os
import pathlib
import re
import socket
import subprocess
import sys

import pytest
from gateway_process import DEFAULT_BINARY, gateway_binary

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "test_load.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = [
    "--factors",
    "1,2",
    "--max-sleep",
    "0.05",
    "--seed",
    "7",
    "--payload-sizes",
    "1K,64K",
    "--payload-calls",
    "10",
    "--noop-calls",
    "30",
    "--map-calls",
    "200",
    "--no-progress",
]


def run_script(*args: str, server: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("DISTRIBUTE_SERVER", None)
    if server is not None:
        env["DISTRIBUTE_SERVER"] = server
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}; stderr:\n{result.stderr}"
    return result.stdout


def value(text: str, key: str) -> float:
    """The number after ``key:`` on its own line (the first one)."""
    match = re.search(rf"^{re.escape(key)}: ([\d.]+)", text, re.MULTILINE)
    assert match, f"no {key!r} line in:\n{text}"
    return float(match.group(1))


def factor_blocks(text: str) -> list[str]:
    """One block of the original test's lines per factor, up to its histogram's end."""
    return re.findall(r"^workers: .*?(?=\n\n|\Z)", text, re.MULTILINE | re.DOTALL)


def histogram(block: str) -> dict[int, int]:
    lines = block.split("num of calls: served by num of workers\n", 1)[1].splitlines()
    return {int(calls): int(workers) for calls, workers in (line.split(": ") for line in lines)}


def check_original_figures(text: str, workers: int, factors: list[int]) -> None:
    blocks = factor_blocks(text)
    assert len(blocks) == len(factors), text
    for block, factor in zip(blocks, factors, strict=True):
        calls = workers * factor
        assert value(block, "workers") == workers
        assert value(block, "calls") == calls
        assert 0 < value(block, "minimal_execution_time") <= 0.05 * factor
        assert value(block, "real_execution_time") > 0
        # A sleep lasts at least its length, so the real time is at least the minimal one.
        assert 0 < value(block, "effectiveness of parallelization") <= 100.5
        # FIFO list scheduling is within twice the optimum (Graham): so is the ideal.
        assert value(block, "ideal_fifo_execution_time") > 0
        assert 0 < value(block, "efficiency vs ideal FIFO") <= 200
        counts = histogram(block)
        assert sum(n * w for n, w in counts.items()) == calls
        assert sum(counts.values()) == workers


def check_payload_and_noop(text: str, sizes: list[str]) -> None:
    for size in sizes:
        row = re.search(rf"^\s*{size} +(\d+) +(\d+) +([\d.]+) +([\d.]+)$", text, re.MULTILINE)
        assert row, f"no payload row for {size} in:\n{text}"
        calls, in_flight, calls_per_second, megabytes = map(float, row.groups())
        assert calls >= in_flight >= 1 and calls_per_second > 0 and megabytes > 0
    p50, p99 = value(text, "no-op latency p50"), value(text, "no-op latency p99")
    assert 0 < p50 <= p99


def check_map(text: str, workers: int, factors: list[int]) -> None:
    section = text.split("\nmap (one stream per map", 1)[1]
    rows = re.findall(
        r"^factor (\d+), (\d+) calls: real ([\d.]+) s, ideal FIFO ([\d.]+) s,"
        r" efficiency vs ideal FIFO ([\d.]+)%$",
        section,
        re.MULTILINE,
    )
    assert [(int(f), int(c)) for f, c, *_ in rows] == [(f, workers * f) for f in factors], section
    for _, _, real, ideal, efficiency in rows:
        assert float(real) > 0 and float(ideal) > 0 and 0 < float(efficiency) <= 200
    assert value(section, "map no-op calls/s (200 calls)") > 0


def check_png(path: pathlib.Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000, f"a {len(data)}-byte plot is suspiciously small"


def test_against_a_running_gateway(gateway, tmp_path):
    plot = tmp_path / "load.png"
    text = succeeded(run_script(*SMALL, "--plot", str(plot), server=gateway.url))
    assert re.search(rf"^transport: {gateway.transport}$", text, re.MULTILINE), text
    assert re.search(rf"^server: {re.escape(gateway.url)}$", text, re.MULTILINE), text
    check_original_figures(text, workers=2, factors=[1, 2])
    check_payload_and_noop(text, ["1 KiB", "64 KiB"])
    check_map(text, workers=2, factors=[1, 2])
    check_png(plot)


def test_against_a_list_of_gateways(start_gateway):
    gateways = [start_gateway("--workers", "1"), start_gateway("--workers", "2")]
    server = ",".join(gateway.url for gateway in gateways)
    text = succeeded(run_script(*SMALL, "--sections", "parallel", "--server", server))
    assert re.search(r"^gateways: 2 \(1, 2 workers\)$", text, re.MULTILINE), text
    check_original_figures(text, workers=3, factors=[1, 2])  # the histogram spans both
    for block, factor in zip(factor_blocks(text), [1, 2], strict=True):
        shares = re.findall(r"^(grpc://\S+): (\d+) \([\d.]+%; ([\d.]+)%\)$", block, re.M)
        assert [url for url, _, _ in shares] == [gateway.url for gateway in gateways], block
        assert sum(int(calls) for _, calls, _ in shares) == 3 * factor
        assert [float(workers) for _, _, workers in shares] == [33.3, 66.7]


def test_sections_can_be_skipped(server):
    text = succeeded(run_script("--sections", "noop", "--noop-calls", "5", "--server", server))
    assert "workers:" not in text and "payload" not in text
    assert "no-op latency p50" in text


def test_compare_runs_both_transports_side_by_side(tmp_path):
    binary = gateway_binary()
    if binary is None:
        pytest.fail(f"no gateway binary at {DEFAULT_BINARY}: run `cargo build --release` first")
    plot = tmp_path / "compare.png"
    result = run_script(
        *SMALL, "--compare", "--workers", "2", "--gateway", str(binary), "--plot", str(plot)
    )
    text = succeeded(result)
    pipe, shm = text.split("== gateway on shm", 1)
    assert "transport: pipe" in pipe and "transport: shm" in shm
    check_original_figures(pipe, workers=2, factors=[1, 2])
    check_original_figures(shm.split("\ncomparison")[0], workers=2, factors=[1, 2])
    check_map(pipe, workers=2, factors=[1, 2])
    comparison = text.split("\ncomparison, 2 workers", 1)[1]
    assert re.search(r"^ +pipe +shm +shm vs pipe$", comparison, re.MULTILINE), comparison
    ratios = re.findall(r"(\d+\.\d+)x$", comparison, re.MULTILINE)
    assert len(ratios) == 2 + 2 + 4 + 3  # factors, payload sizes, no-op figures, map
    check_png(plot)


def test_an_unreachable_server_is_one_line(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"grpc://127.0.0.1:{probe.getsockname()[1]}"
    result = run_script("--no-progress", server=url)
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert url in result.stderr and "unavailable" in result.stderr


def test_fifo_makespan_is_list_scheduling_in_submission_order(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # test_load.py's helpers are not installed
    from loadtest.results import fifo_makespan, percentile

    assert fifo_makespan([3, 1, 1, 1], 2) == 3  # 3 | 1 1 1
    assert fifo_makespan([1, 1, 3], 2) == 4  # 1 3 | 1: not the optimum (3)
    assert fifo_makespan([0.5] * 4, 4) == 0.5
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.0
    assert percentile([float(n) for n in range(1, 101)], 0.99) == 99.0
