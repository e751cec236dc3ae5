"""Starts the gateway binary for ``test_load.py --compare`` on a free port and
stops it: SIGTERM, then wait (SIGKILL past a grace period)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator

START_TIMEOUT = 600.0
STOP_TIMEOUT = 120.0


class GatewayFailed(RuntimeError):
    """The gateway did not start."""


@contextlib.contextmanager
def started_gateway(binary: pathlib.Path, transport: str, workers: int) -> Iterator[str]:
    """Runs the gateway until the block ends (SIGTERM, then wait); yields its URL."""
    if not os.access(binary, os.X_OK):
        raise GatewayFailed(f"no gateway binary at {binary}: run `cargo build --release` first")
    command = [str(binary), "--transport", transport, "--workers", str(workers)]
    command += ["--listen", "127.0.0.1:0", "--python", sys.executable]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True
        )
        try:
            yield wait_until_serving(process, log)
        finally:
            stop_gateway(process)


def wait_until_serving(process: subprocess.Popen, log) -> str:
    """Reads the gateway's stdout until ``serving grpc://HOST:PORT``."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=START_TIMEOUT).strip()
    except queue.Empty:
        line = ""
    if line.startswith("serving "):
        return line.removeprefix("serving ")
    log.seek(0)
    tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
    raise GatewayFailed(
        f"the gateway ({' '.join(process.args)}) did not start"
        + (": " + " | ".join(tail) if tail else "")
    )


def stop_gateway(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.returncode != 0:
        print(f"warning: the gateway exited with {process.returncode}", file=sys.stderr)
