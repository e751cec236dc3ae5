"""Starts the processes the benchmarks talk to: the gateway on a transport,
or the bare tonic echo server. Each prints `serving grpc://HOST:PORT` on
stdout once it is ready; its log goes to a temporary file.

The gateway is the release build, or ``$MYSTIC_GATEWAY_BIN`` as in the test
suite; the echo server likewise, or ``$MYSTIC_ECHO_SERVER_BIN``."""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
# The repository's root is importable from every benchmark (they reuse the
# load test's `test_load` and `loadtest`): here once, not in each of them.
# Last: a block run for another checkout (``PYTHONPATH``, harness.run_block)
# must import that checkout's client, not this one's.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))
GATEWAY = pathlib.Path(
    os.environ.get("MYSTIC_GATEWAY_BIN") or REPO / "target" / "release" / "mysticchallenge"
)
# A plain grpcio channel's options for the benchmarks that time grpcio
# itself (the bare echo): no message size limits, its own connections.
GRPCIO_OPTIONS = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.use_local_subchannel_pool", 1),
)
ECHO_SERVER = pathlib.Path(
    os.environ.get("MYSTIC_ECHO_SERVER_BIN")
    or REPO / "target" / "release" / "examples" / "echo_server"
)


class DidNotStart(SystemExit):
    """A server exited, or never said `serving`; its message holds the log.
    Uncaught, it ends the benchmark with that message, as `sys.exit` would."""


def _require(binary: pathlib.Path, build: str) -> None:
    if not binary.exists():
        sys.exit(f"{binary} is missing: run `{build}` first")


@contextlib.contextmanager
def serving(command: list[str], start_timeout: float = 120.0):
    """Runs `command` until the block ends; yields its `grpc://` URL."""
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    first_line: list[str] = []
    reader = threading.Thread(target=lambda: first_line.append(process.stdout.readline()))
    reader.start()
    reader.join(start_timeout)
    try:
        line = first_line[0].strip() if first_line else ""
        if not line.startswith("serving "):
            log.seek(0)
            raise DidNotStart(f"{command[0]} did not start:\n{log.read().decode(errors='replace')}")
        yield line.removeprefix("serving ")
    finally:
        stop(process)
        log.close()


def gateway_command(binary: str, transport: str, workers: int, *flags: str) -> list[str]:
    """A gateway of `binary` on a free port, `workers` workers of this Python,
    patient at start-up, with `flags` last."""
    command = [str(binary), "--listen", "127.0.0.1:0", "--transport", transport]
    command += ["--workers", str(workers), "--python", sys.executable]
    return [*command, "--startup-timeout", "300", *flags]


@contextlib.contextmanager
def launched(
    command: list[str], grace: float = 60.0, env: dict | None = None, log_path: str | None = None
):
    """Runs `command` (in `env`, its log in `log_path` or a temporary file)
    until the block ends; yields the process, its URL and the seconds from
    launch until it said `serving`. A server that does not serve ends the
    benchmark with its log."""
    opened = open(log_path, "w+b") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
    with opened as log:
        started = time.monotonic()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, text=True, env=env or os.environ
        )
        try:
            line = process.stdout.readline()
            seconds = time.monotonic() - started
            if not line.startswith("serving "):
                log.seek(0)
                tail = log.read().decode(errors="replace")[-2000:]
                raise DidNotStart(f"{command} did not serve:\n{tail}")
            yield process, line.split()[1], seconds
        finally:
            stop(process, grace)


def stop(process: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; reaps the process."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def gateway(transport: str, workers: int, *flags: str, listen: str = "127.0.0.1:0"):
    """The release gateway on `transport` with `workers` workers of this Python,
    listening on `listen`."""
    _require(GATEWAY, "cargo build --release")
    command = [str(GATEWAY), "--listen", listen, "--transport", transport]
    command += ["--workers", str(workers), "--python", sys.executable, *flags]
    return serving(command)


def echo_server():
    """The bare tonic echo server (`examples/echo_server.rs`)."""
    _require(ECHO_SERVER, "cargo build --release --example echo_server")
    return serving([str(ECHO_SERVER), "127.0.0.1:0"])
