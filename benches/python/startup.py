"""Time from launching a gateway until it serves (every worker said
``ready``: the ``serving`` line), for several gateway set-ups interleaved
A B A B ... so that the machine's drift hits all alike; medians and
extremes per set-up.

    .venv/bin/python benches/python/startup.py --workers 200 --rounds 3 \\
        --setup "now=target/release/mysticchallenge" \\
        --setup "before=/path/to/old/mysticchallenge --python /path/to/old-python"

Each ``--setup`` is ``NAME=BINARY [FLAGS...]``; ``--transport`` and
``--workers`` are added to every set-up, ``--python`` (this interpreter)
unless the set-up names one.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys

from _servers import launched


def launch(command: list[str], timeout: float) -> float:
    """Seconds from launch until the ``serving`` line; stops the gateway."""
    with launched(command) as (_process, _url, elapsed):
        if elapsed > timeout:
            sys.exit(f"{command} took {elapsed:.1f}s, over {timeout}s")
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--transports", default="pipe,shm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--setup", action="append", required=True, metavar="NAME=BINARY [FLAGS]")
    args = parser.parse_args()
    setups = []
    for setup in args.setup:
        name, _, command = setup.partition("=")
        words = shlex.split(command)
        if "--python" not in words:
            words += ["--python", sys.executable]
        setups.append((name, words))
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for transport in args.transports.split(","):
            for name, words in setups:
                command = [*words, "--listen", "127.0.0.1:0", "--transport", transport]
                command += ["--workers", str(args.workers), "--startup-timeout", "300"]
                seconds = launch(command, args.timeout)
                results.setdefault((name, transport), []).append(seconds)
                print(f"{name:>10} {transport:>4}: {seconds:6.2f} s", flush=True)
    print(f"\n{args.workers} workers, {args.rounds} rounds: median (min-max) seconds until serving")
    for (name, transport), times in results.items():
        print(
            f"{name:>10} {transport:>4}: {statistics.median(times):6.2f}"
            f" ({min(times):.2f}-{max(times):.2f})"
        )


if __name__ == "__main__":
    main()
