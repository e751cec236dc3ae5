"""Starts and stops the real gateway binary for the Python suite.

One :class:`GatewayProcess` is one ``mysticchallenge`` process with real
Python workers (this interpreter) on ``127.0.0.1:0``, or on the ``--listen``
among its flags. Its stderr (the log) goes to a file, so it never blocks; its
stdout is read until the one line ``serving grpc://127.0.0.1:PORT`` (or
``serving unix:/ABSOLUTE/PATH``), whose address becomes :attr:`url`.
"""

from __future__ import annotations

import os
import pathlib
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import grpc

from distribute_challenge._pb import gateway_pb2, gateway_pb2_grpc

REPO = pathlib.Path(__file__).resolve().parents[2]
BINARY_ENV = "MYSTIC_GATEWAY_BIN"
DEFAULT_BINARY = REPO / "target" / "release" / "mysticchallenge"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

_SERVING = re.compile(r"^serving (grpcs?://(?:127\.0\.0\.1|\[::1\]):\d+|unix:/.+)$")


def gateway_binary() -> pathlib.Path | None:
    """The gateway binary to test, or None when it has not been built."""
    path = pathlib.Path(os.environ.get(BINARY_ENV) or DEFAULT_BINARY)
    return path if path.is_file() and os.access(path, os.X_OK) else None


class GatewayProcess:
    """A running gateway; use :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        binary: pathlib.Path,
        transport: str,
        flags: list[str],
        workdir,
        wrapper: tuple[str, ...] = (),
    ) -> None:
        self.transport = transport
        if "--workers" not in flags:
            flags = ["--workers", "2", *flags]
        self.workers = int(flags[flags.index("--workers") + 1])
        if "--listen" not in flags:
            flags = ["--listen", "127.0.0.1:0", *flags]
        # ``wrapper``: a command the gateway runs under (it must exec it).
        self.command = [
            *wrapper,
            str(binary),
            "--transport",
            transport,
            "--python",
            sys.executable,
            *flags,
        ]
        self.workdir = pathlib.Path(workdir)
        self.log_path = self.workdir / "gateway.log"
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None
        self._channel: grpc.Channel | None = None

    def start(self) -> GatewayProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=self.workdir,
            )
        lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=_drain, args=(self.process.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop(expect_clean=False)
                raise RuntimeError(f"the gateway did not start in {START_TIMEOUT}s{self._tail()}")
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"the gateway exited with {self.process.returncode} before serving"
                        f"{self._tail()}"
                    ) from None
                continue
            if not line:
                continue
            match = _SERVING.match(line.decode(errors="replace").strip())
            if match is None:
                self.stop(expect_clean=False)
                raise RuntimeError(f"unexpected line on the gateway's stdout: {line!r}")
            self.url = match.group(1)
            return self

    def stop(self, expect_clean: bool = True) -> int:
        """Sends SIGTERM, waits (SIGKILL after 10 s); returns the exit status."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                if expect_clean:
                    raise AssertionError(
                        f"the gateway did not exit within {STOP_TIMEOUT}s of SIGTERM{self._tail()}"
                    ) from None
        return process.returncode

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stub(self) -> gateway_pb2_grpc.GatewayStub:
        if self._channel is None:
            options = []
            if self.url.startswith("unix:"):
                # A valid :authority, as the client sends (src/client/target.rs):
                # grpcio's own is the percent-encoded path, which h2 refuses.
                options.append(("grpc.default_authority", "localhost"))
            self._channel = grpc.insecure_channel(self.url.removeprefix("grpc://"), options=options)
        return gateway_pb2_grpc.GatewayStub(self._channel)

    def info(self) -> gateway_pb2.GetWorkersResponse:
        return self.stub().GetWorkers(gateway_pb2.GetWorkersRequest(), timeout=10)

    def restarts(self) -> int:
        return sum(worker.restarts for worker in self.info().workers)

    def calls_served(self) -> int:
        return sum(worker.calls_served for worker in self.info().workers)

    def worker_pids(self) -> set[int]:
        return {worker.pid for worker in self.info().workers}

    def wait_for(self, predicate, what: str, timeout: float = 30.0) -> None:
        """Polls the gateway until ``predicate(self)`` holds."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up after {timeout}s waiting for {what}{self._tail()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _tail(self, lines: int = 30) -> str:
        tail = self.log().splitlines()[-lines:]
        return "; gateway log tail:\n" + "\n".join(tail) if tail else "; the gateway log is empty"


def _drain(stream, lines: queue.Queue[bytes]) -> None:
    for line in iter(stream.readline, b""):
        lines.put(line)
    stream.close()
