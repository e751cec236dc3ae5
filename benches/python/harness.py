"""The shared harness of the Python benchmarks: start a checkout's gateway,
run one block of measurements in a fresh process of that checkout
(``PYTHONPATH`` set to it, in a temporary directory), run rounds of blocks
interleaved (A B A B ..., the order turned every round), time calls, and
report (percentiles, medians, ratios, sizes and rates, Markdown tables, the
machine and the commit a run was made on, the command that reproduces it),
with the argument types and settings every benchmark shares. A benchmark is
a file that says what one block measures and how its figures are judged.

    git worktree add /tmp/before OLD_COMMIT
    (cd /tmp/before && cargo build --release --workspace &&
     cp target/release/lib_native.so mystic_native/_native.abi3.so)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from typing import Any

from _servers import REPO, gateway_command, launched

TICK = os.sysconf("SC_CLK_TCK")
KIB, MIB = 1 << 10, 1 << 20


@contextlib.contextmanager
def gateway(
    binary: str, transport: str, *flags: str, env: dict | None = None, log_path: str | None = None
) -> Iterator:
    """A gateway of ``binary`` on a free loopback port, 4 workers on this
    Python, its log in ``log_path`` (or a temporary file); yields ``(url,
    process)``."""
    command = gateway_command(binary, transport, 4, *flags)
    with launched(command, env=env, log_path=log_path) as (process, url, _):
        yield url, process


def descendants_cpu(root: int) -> float:
    """Seconds of CPU (user + system) of every live process under ``root``."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        times[pid] = (int(fields[11]) + int(fields[12])) / TICK
    total, stack = 0.0, list(children.get(root, []))
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack += children.get(pid, [])
    return total


def run_block(script: str, checkout: pathlib.Path, arguments: list[str]) -> dict:
    """Runs ``script --block CHECKOUT ARGUMENTS...`` in a fresh process of
    ``checkout``; the JSON object its last line prints."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    command = [sys.executable, script, "--block", str(checkout), *arguments]
    with tempfile.TemporaryDirectory() as workdir:
        finished = subprocess.run(command, env=env, capture_output=True, text=True, cwd=workdir)
    if finished.returncode != 0:
        sys.exit(f"a block of {checkout} failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def interleave(rounds: int, blocks: dict[str, Callable[[], dict]]) -> dict[str, list[dict]]:
    """Runs every block once a round, in turned order; each block's figures."""
    results: dict[str, list[dict]] = {name: [] for name in blocks}
    names = list(blocks)
    for number in range(rounds):
        for name in names if number % 2 == 0 else names[::-1]:
            results[name].append(blocks[name]())
        print(f"round {number + 1}/{rounds}", file=sys.stderr)
    return results


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def checkout_of(path: str) -> pathlib.Path:
    return pathlib.Path(path).resolve()


def binary_of(checkout: pathlib.Path) -> str:
    return str(checkout / "target" / "release" / "mysticchallenge")


def parse_size(text: str) -> int:
    units = {"K": KIB, "M": MIB, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        if text and text[-1] in units:
            return int(text[:-1]) * units[text[-1]]
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1K, 64K, 16M)") from None


def parse_sizes(text: str) -> list[int]:
    return list(dict.fromkeys(parse_size(part) for part in text.split(",")))  # once each


def count(text: str, least: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"at least {least}, not {value}")
    return value


def settings_from(options: argparse.Namespace, full: Any, quick: Any) -> Any:
    """A copy of ``quick`` (with ``--quick``) or ``full`` (a benchmark's
    settings, a dataclass), with each setting given on the command line set
    on it."""
    settings = replace(quick if options.quick else full)
    for name in asdict(settings):
        value = getattr(options, name, None)
        if value is not None:
            setattr(settings, name, value)
    return settings


def rotated(contestants: list, round_number: int) -> list:
    shift = round_number % len(contestants)
    return contestants[shift:] + contestants[:shift]


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def timed(call: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def percentile(samples: list[float], percent: int) -> float:
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[percent - 1]


def duration(seconds: float) -> str:
    micros = seconds * 1e6
    if micros < 10_000:
        return f"{micros:,.0f} µs"
    millis = micros / 1000
    return f"{millis:.1f} ms" if millis < 1000 else f"{millis / 1000:.2f} s"


def byte_rate(per_second: float) -> str:
    for unit, scale in (("GiB/s", 1 << 30), ("MiB/s", MIB), ("KiB/s", KIB)):
        if per_second >= scale:
            value = per_second / scale
            digits = 0 if value >= 100 else 1 if value >= 10 else 2
            return f"{value:.{digits}f} {unit}"
    return f"{per_second:.0f} B/s"


def size_label(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", KIB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}x"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "unknown"


def binary(path: pathlib.Path) -> str:
    try:
        built = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    except OSError:
        return f"{path} (missing)"
    return f"{path} (built {built})"


def command_line(script: str = "compare.py") -> str:
    """How this run was started, for the header: the binaries' variables,
    then ``script`` (of ``benches/python/``) and its arguments."""
    variables = [
        f"{name}={shlex.quote(os.environ[name])}"
        for name in ("MYSTIC_GATEWAY_BIN", "MYSTIC_ECHO_SERVER_BIN")
        if os.environ.get(name)
    ]
    return " ".join(
        [*variables, f".venv/bin/python benches/python/{script}", *map(shlex.quote, sys.argv[1:])]
    )


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "count": len(samples),
        "min": min(samples),
        "p50": percentile(samples, 50),
        "p90": percentile(samples, 90),
        "p99": percentile(samples, 99),
        "max": max(samples),
        "mean": statistics.fmean(samples),
    }


def memory_total() -> str:
    try:
        with open("/proc/meminfo") as meminfo:
            kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        return "unknown RAM"
    return f"{kib / (1 << 20):.1f} GiB RAM"
