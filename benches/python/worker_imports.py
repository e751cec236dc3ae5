"""What a worker's start-up imports cost, for one or more source trees, A/B.

Usage::

    .venv/bin/python benches/python/worker_imports.py TREE [TREE ...] [--runs 20]

A tree is a directory that holds ``worker_shim/`` and the packages it imports
(this checkout, or an older commit unpacked with ``git archive``); it is put
first on ``PYTHONPATH`` and is the working directory, so its packages win over
the installed ones. Third-party packages come from this interpreter. Runs are
interleaved tree by tree (the machine's noise falls on every tree alike),
after one discarded warm-up run per tree that writes the ``.pyc`` files.

Two figures per tree, as medians:

- ``importtime``: ``python -X importtime -c "import worker_shim._executor"``,
  the cumulative microseconds of its top-level ``worker_shim._executor`` line;
- ``CPU``: user + system CPU of a process that imports what a worker imports
  before its first call (``python -c "import worker_shim.__main__, ..."``:
  ``__main__``, ``_executor``, ``_loop`` where the tree has it, ``_pipe``,
  ``_shm``), from ``resource.getrusage(RUSAGE_CHILDREN)``; and, for scale,
  the CPU of ``python -c pass``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import resource
import statistics
import subprocess
import sys

WORKER_MODULES = ("__main__", "_executor", "_loop", "_pipe", "_shm")
_EXECUTOR_LINE = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| worker_shim\._executor$")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", type=pathlib.Path)
    parser.add_argument("--runs", type=int, default=20, help="runs per tree and figure")
    return parser.parse_args()


def worker_imports(tree: pathlib.Path) -> str:
    """The import statement of the worker's start-up modules that ``tree`` has."""
    present = [name for name in WORKER_MODULES if (tree / "worker_shim" / f"{name}.py").is_file()]
    return "import " + ", ".join(f"worker_shim.{name}" for name in present)


def run(tree: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True, check=True
    )


def importtime_us(tree: pathlib.Path) -> int:
    stderr = run(tree, "-X", "importtime", "-c", "import worker_shim._executor").stderr
    for line in stderr.splitlines():
        if match := _EXECUTOR_LINE.match(line):
            return int(match.group(1))
    raise RuntimeError(f"no worker_shim._executor line in the importtime output of {tree}")


def cpu_ms(tree: pathlib.Path, code: str) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run(tree, "-c", code)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return spent * 1000


def main() -> None:
    args = parse_args()
    trees = [tree.resolve() for tree in args.trees]
    for tree in trees:  # warm-up: .pyc files
        importtime_us(tree)
        cpu_ms(tree, worker_imports(tree))
    importtimes: dict[pathlib.Path, list[int]] = {tree: [] for tree in trees}
    cpus: dict[pathlib.Path, list[float]] = {tree: [] for tree in trees}
    bare: list[float] = []
    for _ in range(args.runs):
        for tree in trees:
            importtimes[tree].append(importtime_us(tree))
            cpus[tree].append(cpu_ms(tree, worker_imports(tree)))
        bare.append(cpu_ms(trees[0], "pass"))
    print(f"python {sys.version.split()[0]}, {args.runs} interleaved runs per figure, medians")
    print("| tree | importtime of worker_shim._executor | CPU of the worker's imports |")
    print("|---|---:|---:|")
    for tree in trees:
        importtime = statistics.median(importtimes[tree]) / 1000
        cpu = statistics.median(cpus[tree])
        print(f"| {tree} | {importtime:.1f} ms | {cpu:.0f} ms |")
    print(f"| `python -c pass` | | {statistics.median(bare):.0f} ms |")
    for tree in trees:
        print(f"{tree}: {worker_imports(tree)}")


if __name__ == "__main__":
    main()
