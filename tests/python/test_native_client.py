"""What the client's calls through the extension (``mystic_native.Client``)
promise beyond the calls themselves, on both transports: a blocking call
lets the caller's other threads run and gives way to a signal's handler
(Ctrl-C), a connection the gateway closed while nothing drove it is dialled
again, a process that forks calls again from the child, objects made before
a fork say so when used after it, and a plain grpcio client of the proto
keeps working beside it (the contract callers in other languages have)."""

from __future__ import annotations

import os
import pathlib
import signal
import threading
import time

import pytest

from distribute_challenge import _client, compute_this
from distribute_challenge._pb import gateway_pb2
from distribute_challenge._target import parse_server
from mystic_wire import decode_response, encode_request


def wait_for_marker(started: str, marker: str, seconds: float) -> bool:
    """Says it started, then waits for ``marker``, which only the caller's
    other thread creates."""
    pathlib.Path(started).touch()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(marker):
            return True
        time.sleep(0.01)
    return False


def add(a, b):
    return a + b


def touch_sleep_touch(started: str, seconds: float, done: str) -> None:
    pathlib.Path(started).touch()
    time.sleep(seconds)
    pathlib.Path(done).touch()


class Interrupted(Exception):
    pass


def test_a_signal_handler_that_raises_ends_a_blocking_call(start_gateway, tmp_path):
    # A gateway of its own: the interrupted call runs on to its end there.
    gateway = start_gateway("--workers", "2")
    on = compute_this(server=gateway.url)
    started, done = tmp_path / "started", tmp_path / "done"

    def on_alarm(*_):
        raise Interrupted

    def alarm_once_started() -> None:
        while not started.exists():
            time.sleep(0.01)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGALRM)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    alarm = threading.Thread(target=alarm_once_started)
    alarm.start()
    try:
        with pytest.raises(Interrupted):
            on(touch_sleep_touch)(str(started), 20, str(done)).run()
    finally:
        started.touch()  # the alarm thread ends whatever happened
        alarm.join(30)
        signal.signal(signal.SIGALRM, previous)
    # Raised while the call ran, not once it had ended.
    assert not done.exists(), "the handler ran only after the call"
    assert on(add)(1, 2).run() == 3


def test_a_connection_the_gateway_closed_while_idle_is_dialled_again(start_gateway):
    gateway = start_gateway("--idle-connection-timeout", "1")
    adder = compute_this(server=gateway.url)(add)
    assert adder(1, 2).run() == 3
    # Nothing drives the client's connection meanwhile: the gateway's GOAWAY
    # is read at the next call, which must not fail for it.
    time.sleep(2.5)
    assert adder(2, 3).run() == 5
    assert [adder(i, i).run() for i in range(3)] == [0, 2, 4]


def test_a_blocking_call_lets_the_callers_other_threads_run(remote, tmp_path):
    started, marker = tmp_path / "started", tmp_path / "marker"

    def other_thread() -> None:
        # Runs only if the calling thread released the GIL while it waits.
        while not started.exists():
            time.sleep(0.01)
        marker.touch()

    helper = threading.Thread(target=other_thread)
    helper.start()
    try:
        assert remote(wait_for_marker)(str(started), str(marker), 30).run() is True
    finally:
        marker.touch()
        helper.join(30)


def test_a_forked_child_calls_the_gateway_itself(remote):
    adder = remote(add)
    assert adder(1, 2).run() == 3  # the parent's connection is open
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child's outcome is its exit status)
        status = 1
        try:
            os.close(read)
            os.write(write, str(adder(20, 22).run()).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as answer:
        said = answer.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert said == "42"
    assert adder(3, 4).run() == 7  # the parent's connection still serves


def test_a_client_object_made_before_a_fork_says_so_in_the_child(server):
    client = _client.client(parse_server(server))
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover
        try:
            os.close(read)
            try:
                client.get_workers((), 10)
                said = "no error"
            except RuntimeError as exc:
                said = str(exc)
            os.write(write, said.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        said = answer.read()
    os.waitpid(child, 0)
    assert "made in another process (before os.fork())" in said


def test_a_plain_grpcio_client_of_the_proto_still_works(gateway):
    stub = gateway.stub()  # grpcio and the generated stubs, nothing of the client
    info = stub.GetWorkers(gateway_pb2.GetWorkersRequest(), timeout=30)
    assert info.count >= 1 and len(info.workers) == info.count
    response = stub.Execute(
        gateway_pb2.ExecuteRequest(payload=encode_request(add, (2, 3), {}, ())), timeout=30
    )
    assert decode_response(response.payload).value == 5


def test_a_bad_metadata_value_is_refused_before_anything_is_sent(server):
    remote = compute_this(server=server, token="two\nlines")(add)
    with pytest.raises(ValueError, match="metadata authorization is not a header value"):
        remote(1, 2).run()
    assert compute_this(server=server)(add)(1, 2).run() == 3
