"""The worker shim's pipe protocol, spoken directly to ``python -m worker_shim``
over its link (a socket pair, its fd 0), without a gateway: handshake, round
trips, fd hygiene, exit statuses."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import cloudpickle
import pytest

from mystic_wire import (
    CLOSE_REQUEST,
    ERROR,
    NEXT_REQUEST,
    OK,
    RAISED,
    STREAM_MAGIC,
    decode_chunk,
    decode_response,
    encode_request,
    strip_kept,
)

# The workers cannot import this module, so its functions travel by value, as
# the client arranges for such modules (distribute_challenge._by_value).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Shim:
    """One worker process speaking the line protocol on its link."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.link, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker_shim", *(args or ("--transport", "pipe"))],
                stdin=theirs,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={**os.environ, "MYSTIC_GATEWAY_PID": str(os.getpid()), **(env or {})},
            )
        self.lines = self.link.makefile("rb")

    def readline(self) -> bytes:
        return self.lines.readline()

    def send_line(self, line: bytes) -> None:
        self.link.sendall(line)

    def call(self, function, *args, **kwargs):
        return decode_response(self.exchange(encode_request(function, args, kwargs, ())))

    def exchange(self, payload: bytes) -> bytes:
        """Sends one request payload; returns the response payload (without
        the mark of a kept function, which is the gateway's business)."""
        self.send_line(base64.b64encode(payload) + b"\n")
        line = self.readline()
        assert line.endswith(b"\n"), f"no response line; stderr: {self.stderr()}"
        return bytes(strip_kept(base64.b64decode(line[:-1], validate=True))[1])

    def close(self) -> tuple[int, str]:
        """Ends the link (EOF) and returns the exit status and stderr."""
        self.link.shutdown(socket.SHUT_WR)
        status = self.process.wait(timeout=30)
        return status, self.stderr()

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "<still running>"
        return self.process.stderr.read().decode(errors="replace")


@pytest.fixture
def shim():
    worker = Shim()
    assert worker.readline() == b"ready\n"
    yield worker
    if worker.process.poll() is None:
        worker.process.kill()
        worker.process.wait()
    worker.lines.close()
    worker.link.close()
    worker.process.stderr.close()


def square(x):
    return x * x


def noisy():
    print("printed to sys.stdout")
    print("printed to sys.stderr", file=sys.stderr)
    os.write(1, b"raw write to fd 1\n")
    os.write(2, b"raw write to fd 2\n")
    subprocess.run(["echo", "child process output"], check=True)
    return "still intact"


def fails():
    raise KeyError("missing")


def exits():
    sys.exit(7)


def holds_a_generator():
    return [(x for x in range(3))]


def counts(n, marker):
    try:
        yield from range(n)
    finally:
        with open(marker, "w") as file:
            file.write("closed")


def reads_stdin():
    return sys.stdin.read()


def test_ready_then_round_trips(shim):
    assert shim.call(square, 7) == (OK, 49, "", "")
    assert shim.call(square, x=3).value == 9


def test_fd_1_writes_do_not_reach_the_protocol(shim):
    response = shim.call(noisy)
    assert response.kind == OK
    assert response.value == "still intact"
    assert response.stdout == "printed to sys.stdout\n"
    assert response.stderr == "printed to sys.stderr\n"
    assert shim.call(square, 2).value == 4
    status, stderr = shim.close()
    assert status == 0
    assert "raw write to fd 1" in stderr
    assert "raw write to fd 2" in stderr
    assert "child process output" in stderr


def test_stdin_is_empty_for_user_code(shim):
    assert shim.call(reads_stdin) == (OK, "", "", "")


def test_exceptions_and_exits_become_responses(shim):
    raised = shim.call(fails)
    assert raised.kind == RAISED
    assert isinstance(raised.value, KeyError)
    exited = shim.call(exits)
    assert exited.kind == RAISED
    assert isinstance(exited.value, SystemExit)
    assert exited.value.code == 7
    unpicklable = shim.call(holds_a_generator)
    assert unpicklable.kind == ERROR
    assert "could not be pickled" in unpicklable.value
    assert shim.call(square, 5).value == 25


def test_a_streamed_call_answers_chunk_by_chunk_until_its_end(shim, tmp_path):
    marker = str(tmp_path / "closed")
    request = encode_request(counts, (3, marker), {}, ())
    # .run() of a generator function: the list of its items.
    assert shim.call(counts, 3, marker).value == [0, 1, 2]
    first = shim.exchange(STREAM_MAGIC + request)
    assert decode_chunk(first).items == [0, 1, 2]
    end = decode_response(shim.exchange(NEXT_REQUEST))
    assert (end.kind, end.value) == (OK, None)
    # Closed midway: the generator's finally runs, the worker takes calls again.
    os.remove(marker)
    request = encode_request(counts, (10**9, marker), {}, ())
    assert len(decode_chunk(shim.exchange(STREAM_MAGIC + request)).items) > 0
    assert len(decode_chunk(shim.exchange(NEXT_REQUEST)).items) > 0
    closed = decode_response(shim.exchange(CLOSE_REQUEST))
    assert closed.kind == OK and open(marker).read() == "closed"
    # Asked for items when none stream: an error response, not a crash.
    stray = decode_response(shim.exchange(NEXT_REQUEST))
    assert stray.kind == ERROR and "no call is streaming" in stray.value
    assert shim.call(square, 6).value == 36


def test_a_request_without_magic_gets_an_error_response(shim):
    shim.send_line(base64.b64encode(b"no magic here") + b"\n")
    response = decode_response(base64.b64decode(shim.readline()))
    assert response.kind == ERROR
    assert "could not decode the call" in response.value
    shim.send_line(b"\n")  # an empty payload is a request without magic too
    assert decode_response(base64.b64decode(shim.readline())).kind == ERROR
    assert shim.call(square, 6).value == 36


def test_large_payloads_round_trip(shim):
    blob = os.urandom(8 << 20)
    assert shim.call(bytes, blob).value == blob


def test_eof_exits_0(shim):
    status, _ = shim.close()
    assert status == 0


def test_a_line_that_is_not_base64_exits_1(shim):
    shim.send_line(b"this is not base64!\n")
    assert shim.readline() == b""
    status, stderr = shim.close()
    assert status == 1
    assert "protocol error" in stderr


def test_shm_whose_link_says_no_hello_exits_1_with_one_line():
    # A stream socket that says something else instead of the handshake.
    worker = Shim("--transport", "shm")
    worker.send_line(b"not a handshake\n")
    status, stderr = worker.close()
    assert status == 1
    assert "protocol error" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_a_worker_whose_gateway_is_gone_exits():
    worker = Shim(env={"MYSTIC_GATEWAY_PID": "1"})
    assert worker.readline() == b""
    status, stderr = worker.close()
    assert status == 1
    assert "gateway" in stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_the_worker_dies_with_its_parent():
    # A parent that starts a worker, waits for `ready`, prints its pid and exits.
    parent_code = textwrap.dedent(
        """
        import os, socket, subprocess, sys
        link, theirs = socket.socketpair()
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker_shim", "--transport", "pipe"],
            stdin=theirs, stdout=subprocess.DEVNULL,
            env={**os.environ, "MYSTIC_GATEWAY_PID": str(os.getpid())},
        )
        assert link.makefile("rb").readline() == b"ready\\n"
        print(worker.pid, flush=True)
        os._exit(0)
        """
    )
    parent = subprocess.run(
        [sys.executable, "-c", parent_code], capture_output=True, timeout=60, check=True
    )
    pid = int(parent.stdout)
    deadline = time.monotonic() + 10
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the worker outlived its parent")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
