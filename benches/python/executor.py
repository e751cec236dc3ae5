"""The ``Executor`` and the joblib backend against what they stand beside, in
one run, interleaved, on a gateway per transport (``--workers`` 4):

1. ``latency``: sequential ``executor.submit(noop).result()`` against
   ``noop().run()`` of the same function, in blocks of ``--calls``, the two
   alternated (A B A B, the first rotated from round to round); p50, p99 and
   the ratio of the medians;
2. ``tiny``: ``Parallel(n_jobs=-1)`` over ``--tasks`` ``math.sqrt`` tasks on
   the backend ``"mysticchallenge"`` (one backend per gateway for every
   run, as within one ``parallel_config`` block), against joblib's default
   backend (loky) with ``n_jobs`` = the gateway's workers, its processes
   started first; seconds per run, medians of ``--rounds``;
3. ``sleeps``: the original load test's random sleeps (``workers * factor``
   tasks sleeping ``random.random() * --max-sleep`` seconds, the same for
   every contestant of a round) through ``Parallel(n_jobs=-1)`` on the
   backend, and on loky (``n_jobs`` = workers) for reference, against an
   ideal FIFO list scheduler (as ``test_load.py`` computes it): ideal / real.

    cargo build --release
    .venv/bin/python benches/python/executor.py           # the figures (a few minutes)
    .venv/bin/python benches/python/executor.py --quick   # a smoke run

Run it from a directory with no other ``worker_shim`` in it. The functions
are defined here, in ``__main__``, so they travel by value, as users' do.
The tasks' results and the warm-up calls' are checked. The output is
Markdown for BENCHMARKS.md: the command, commit and machine, a table per
section and the targets.
``$MYSTIC_GATEWAY_BIN`` picks another gateway binary.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from _servers import gateway
from harness import (
    command_line,
    cpu_model,
    duration,
    git_commit,
    load_average,
    markdown_table,
    percentile,
    progress,
    ratio,
    rotated,
    settings_from,
)
from joblib import Parallel, delayed, parallel_config

from distribute_challenge import Executor, compute_this
from distribute_challenge.joblib import GatewayBackend
from loadtest.results import fifo_makespan  # the load test's scheduler model

TRANSPORTS = ["pipe", "shm"]
LOKY = "loky"
# The targets the figures are judged by.
SUBMIT_OVER_RUN = 1.1
TINY_OVER_LOKY = 2.0
SLEEP_EFFICIENCY = 0.99


def noop():
    return None


def nap(seconds):
    time.sleep(seconds)
    return seconds


@dataclass
class Settings:
    workers: int = 4
    calls: int = 1000  # sequential calls per latency block
    rounds: int = 5  # of the latency blocks and of the tiny tasks
    warmup: int = 200  # untimed calls per contestant before the latency
    tasks: int = 10_000  # math.sqrt tasks per Parallel
    factors: list[int] = field(default_factory=lambda: [1, 2, 5, 10])
    max_sleep: float = 1.0
    sleep_rounds: int = 3  # an odd number: the median is one of them
    seed: int = 1


QUICK = Settings(
    calls=20, rounds=1, warmup=5, tasks=500, factors=[1], max_sleep=0.05, sleep_rounds=1
)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny counts, 1 round")
    for name in ("workers", "calls", "rounds", "warmup", "tasks", "sleep-rounds", "seed"):
        parser.add_argument(f"--{name}", type=int)
    parser.add_argument("--max-sleep", type=float)
    return parser.parse_args()


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def latency(urls: dict[str, str], settings: Settings) -> dict[str, list[float]]:
    """Each transport's ``run`` and ``submit`` samples, in seconds."""
    samples: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        ways = {}
        for transport, url in urls.items():
            remote = compute_this(server=url)(noop)
            executor = stack.enter_context(Executor(url))
            ways[f"{transport} run"] = lambda remote=remote: remote().run()
            ways[f"{transport} submit"] = lambda ex=executor: ex.submit(noop).result()
        for name, call in ways.items():
            for _ in range(settings.warmup):
                if call() is not None:
                    raise AssertionError(f"{name}: noop answered something")
            samples[name] = []
        for round_number in range(settings.rounds):
            progress(f"latency: round {round_number + 1}/{settings.rounds}")
            for name in rotated(list(ways), round_number):
                call = ways[name]
                samples[name] += [timed(call) for _ in range(settings.calls)]
    return samples


Backends = dict[str, Callable[[], parallel_config]]


def backends(urls: dict[str, str], settings: Settings) -> Backends:
    """Each contestant's ``parallel_config``, for ``Parallel()``: one
    ``GatewayBackend`` per gateway for every run (as within one
    ``parallel_config`` block) with ``n_jobs=-1``, and loky with as many
    processes as the gateways have workers."""
    ours = {transport: GatewayBackend(server=url) for transport, url in urls.items()}
    configs: Backends = {
        name: (lambda b=b: parallel_config(backend=b, n_jobs=-1)) for name, b in ours.items()
    }
    configs[LOKY] = lambda: parallel_config(backend="loky", n_jobs=settings.workers)
    return configs


def tiny(configs: Backends, settings: Settings) -> dict[str, list[float]]:
    """Seconds of each contestant's ``Parallel`` over ``tasks`` square roots."""
    expected = [math.sqrt(i) for i in range(settings.tasks)]

    def roots(name: str) -> None:
        with configs[name]():
            found = Parallel()(delayed(math.sqrt)(i) for i in range(settings.tasks))
        if found != expected:
            raise AssertionError(f"{name}: Parallel answered other roots")

    for name in configs:
        roots(name)  # warm: loky's processes, the workers' imports
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    for round_number in range(settings.rounds):
        progress(f"tiny: round {round_number + 1}/{settings.rounds}")
        for name in rotated(list(configs), round_number):
            seconds[name].append(timed(lambda name=name: roots(name)))
    return seconds


def sleeps(configs: Backends, settings: Settings) -> dict[int, dict[str, list[float]]]:
    """Per factor, each contestant's efficiencies against ideal FIFO."""
    found = {factor: {name: [] for name in configs} for factor in settings.factors}
    for round_number in range(settings.sleep_rounds):
        progress(f"sleeps: round {round_number + 1}/{settings.sleep_rounds}")
        rng = random.Random(f"{settings.seed}/{round_number}")
        for factor in settings.factors:
            drawn = [rng.random() * settings.max_sleep for _ in range(settings.workers * factor)]
            ideal = fifo_makespan(drawn, settings.workers)
            for name in rotated(list(configs), round_number + factor):
                with configs[name]():
                    start = time.perf_counter()
                    slept = Parallel()(delayed(nap)(s) for s in drawn)
                    real = time.perf_counter() - start
                if slept != drawn:
                    raise AssertionError(f"{name}: the naps answered other seconds")
                found[factor][name].append(ideal / real)
    return found


def report(settings: Settings, loads: tuple[str, str], lat, tin, slp) -> str:
    lines = [
        f"`{command_line('executor.py')}`",
        "",
        f"- commit {git_commit()}; {cpu_model()}, {os.cpu_count()} cores; "
        f"load average before {loads[0]}, after {loads[1]}",
        f"- gateways of {settings.workers} workers; seed of the sleeps {settings.seed}",
        "",
        f"**`submit(noop).result()` against `noop().run()`**, {settings.rounds} rounds of "
        f"{settings.calls:,} sequential calls each:",
        "",
    ]
    rows, worst_latency = [], 0.0
    for transport in TRANSPORTS:
        run, submit = lat[f"{transport} run"], lat[f"{transport} submit"]
        over = statistics.median(submit) / statistics.median(run)
        worst_latency = max(worst_latency, over)
        rows.append(
            [transport]
            + [duration(f(samples)) for samples in (run, submit) for f in (_p50, _p99)]
            + [f"{over:.2f}x"]
        )
    header = ["transport", "run p50", "run p99", "submit p50", "submit p99", "submit / run"]
    lines += markdown_table(header, rows)
    loky = statistics.median(tin[LOKY])
    lines += [
        "",
        f"**`Parallel(n_jobs=-1)` over {settings.tasks:,} `math.sqrt` tasks**, medians of "
        f"{settings.rounds} rounds (loky: `n_jobs={settings.workers}`):",
        "",
    ]
    rows = [
        [name, f"{statistics.median(s):.3f} s", f"{min(s):.3f}-{max(s):.3f} s"]
        + [ratio(statistics.median(s), loky)]
        for name, s in tin.items()
    ]
    lines += markdown_table(["backend", "median", "min-max", "/ loky"], rows)
    worst_tiny = max(statistics.median(tin[t]) for t in TRANSPORTS) / loky
    lines += [
        "",
        f"**Random sleeps through `Parallel(n_jobs=-1)`**, median efficiency against ideal "
        f"FIFO over {settings.sleep_rounds} rounds (loky: `n_jobs={settings.workers}`):",
        "",
    ]
    rows, worst_sleep = [], 1.0
    for factor, by_name in slp.items():
        medians = {name: statistics.median(values) for name, values in by_name.items()}
        worst_sleep = min([worst_sleep, *(medians[t] for t in TRANSPORTS)])
        rows.append([str(factor), str(settings.workers * factor)])
        rows[-1] += [f"{medians[name]:.1%}" for name in (*TRANSPORTS, LOKY)]
    lines += markdown_table(["factor", "tasks", *TRANSPORTS, LOKY], rows)
    targets = [
        (
            "submit / run, p50",
            f"<= {SUBMIT_OVER_RUN}x",
            f"{worst_latency:.2f}x",
            worst_latency <= SUBMIT_OVER_RUN,
        ),
        (
            "tiny tasks / loky",
            f"<= {TINY_OVER_LOKY}x",
            f"{worst_tiny:.2f}x",
            worst_tiny <= TINY_OVER_LOKY,
        ),
        (
            "sleeps, ideal FIFO",
            f">= {SLEEP_EFFICIENCY:.0%}",
            f"{worst_sleep:.1%}",
            worst_sleep >= SLEEP_EFFICIENCY,
        ),
    ]
    rows = [[name, goal, got, "yes" if met else "**no**"] for name, goal, got, met in targets]
    lines += ["", "Targets (the worse transport):", ""]
    lines += markdown_table(["target", "goal", "figure", "met"], rows)
    return "\n".join(lines)


def _p50(samples: list[float]) -> float:
    return statistics.median(samples)


def _p99(samples: list[float]) -> float:
    return percentile(samples, 99)


def main() -> None:
    settings = settings_from(arguments(), Settings(), QUICK)
    loads = [load_average()]
    with contextlib.ExitStack() as stack:
        urls = {t: stack.enter_context(gateway(t, settings.workers)) for t in TRANSPORTS}
        lat = latency(urls, settings)
        configs = backends(urls, settings)
        tin = tiny(configs, settings)
        slp = sleeps(configs, settings)
    loads.append(load_average())
    print(report(settings, (loads[0], loads[1]), lat, tin, slp))


if __name__ == "__main__":
    main()
