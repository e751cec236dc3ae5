"""The shared harness of the Python benchmarks that compare checkouts:
start a checkout's gateway, run one block of measurements in a fresh process
of that checkout (``PYTHONPATH`` set to it, in a temporary directory), run
rounds of blocks interleaved (A B A B ..., the order turned every round),
and summarize (percentiles, medians, ratios). A benchmark is a short file
that says what one block measures and how the figures are reported.

    git worktree add /tmp/before OLD_COMMIT
    (cd /tmp/before && cargo build --release --workspace &&
     cp target/release/lib_native.so mystic_native/_native.abi3.so)
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator

TICK = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def gateway(
    binary: str, transport: str, *flags: str, env: dict | None = None, log_path: str | None = None
) -> Iterator:
    """A gateway of ``binary`` on a free loopback port, 4 workers on this
    Python, its log in ``log_path`` (or a temporary file); yields ``(url,
    process)``."""
    command = [binary, "--listen", "127.0.0.1:0", "--transport", transport]
    command += ["--workers", "4", "--python", sys.executable, *flags]
    opened = open(log_path, "w+b") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
    with opened as log:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, text=True, env=env or os.environ
        )
        try:
            line = process.stdout.readline().strip()
            if not line.startswith("serving "):
                log.seek(0)
                sys.exit(f"the gateway did not start:\n{log.read().decode()[-3000:]}")
            yield line.removeprefix("serving "), process
        finally:
            process.terminate()
            process.wait()


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


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


def checkout_of(path: str) -> pathlib.Path:
    return pathlib.Path(path).resolve()


def binary_of(checkout: pathlib.Path) -> str:
    return str(checkout / "target" / "release" / "mysticchallenge")
