"""What a careless or hostile function (or local user) can do to the
gateway, on both transports: a function that forks and then crashes is
reported at once and its children do not outlive it; on shm, a function
cannot resize its segment under the gateway, and one that scribbles over its
rings loses only its worker; names squatted by someone else stop nothing."""

from __future__ import annotations

import ctypes
import os
import pathlib
import signal
import time

import pytest
from system_state import process_alive, wait_until

from distribute_challenge import WorkerCrashed, compute_this


def fork_then_crash(pid_file):
    """Forks a child that would sleep for ten minutes, past the suite's
    per-test timeout, holding every inherited descriptor (the protocol's
    among them), then segfaults."""
    child = os.fork()
    if child == 0:
        time.sleep(600)
        os._exit(0)
    with open(pid_file, "w") as file:
        file.write(str(child))
    ctypes.string_at(0)


@pytest.fixture(scope="module")
def crashing(launcher):
    """A gateway of its own: these tests crash its workers."""
    gateway = launcher.start()
    yield gateway
    launcher.stop(gateway)


def test_a_crash_is_reported_at_once_and_the_functions_children_are_ended(crashing, tmp_path):
    pid_file = tmp_path / "child.pid"
    call = compute_this(server=crashing.url)(fork_then_crash)(str(pid_file))
    with pytest.raises(WorkerCrashed, match=r"signal 11 \(SIGSEGV\)"):
        call.run()
    # The child holds the pipes or the doorbell past the test's timeout: the
    # call returned because the crash was seen from the exit itself.
    child = int(pid_file.read_text())
    wait_until(lambda: not process_alive(child), "the crashed worker's child to be ended", 5)
    assert compute_this(server=crashing.url)(os.getpid)().run() in crashing.worker_pids()


def find_own_segment():
    """The worker's mapping of its segment, as a function can find it."""
    for line in open("/proc/self/maps"):
        if "memfd:mysticchallenge-rings" in line:
            return line.split()[0]
    return None


def resize_own_segment():
    """Tries the ways a function has to resize its worker's segment, to punch
    pages out of it or to write it other than through the rings."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    punch_hole = 0x01 | 0x02  # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
    span = find_own_segment()
    if span is None:
        return ["no segment found"]

    def punch(fd):
        if libc.fallocate(fd, punch_hole, ctypes.c_long(0), ctypes.c_long(1 << 16)) != 0:
            raise OSError(ctypes.get_errno(), "fallocate")

    attempts = {
        "shrink": lambda fd: os.ftruncate(fd, 0),
        "grow": lambda fd: os.ftruncate(fd, 1 << 30),
        "punch": punch,
        "write": lambda fd: os.pwrite(fd, b"x", 64),
    }
    tried = []
    for what, attempt in attempts.items():
        try:
            # The mapping's file, reopened through /proc (root can).
            fd = os.open(f"/proc/self/map_files/{span}", os.O_RDWR)
        except OSError as exc:
            tried.append(f"{what} open: {exc.errno}")
            continue
        try:
            attempt(fd)
            tried.append(f"{what} done")
        except OSError as exc:
            tried.append(f"{what} refused: {exc.errno}")
        finally:
            os.close(fd)
    return tried


def scribble_over_own_rings():
    """Overwrites the ring counters with garbage, through the worker's own
    mapping of its segment (no new writable mapping can be made of it)."""
    start = int(find_own_segment().split("-")[0], 16)
    ctypes.memset(start + 64, 0x7F, 256)
    return "scribbled"


@pytest.fixture
def shm_only(launcher):
    if launcher.transport != "shm":
        pytest.skip("only the shm transport shares memory with its workers")


def test_a_function_cannot_resize_its_segment_under_the_gateway(shm_only, crashing):
    remote = compute_this(server=crashing.url)
    tried = remote(resize_own_segment)().run()
    # EPERM (1) for each: the segment is sealed.
    assert tried == [f"{what} refused: 1" for what in ("shrink", "grow", "punch", "write")], tried
    # The gateway lives on and serves.
    assert crashing.process.poll() is None
    assert remote(abs)(-5).run() == 5
    for pid in crashing.worker_pids() - {0}:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        assert not any(b"mystic-" in arg or b"/dev/shm" in arg for arg in argv), argv


def test_a_worker_that_scribbles_over_its_rings_loses_only_itself(shm_only, crashing):
    remote = compute_this(server=crashing.url)
    with pytest.raises(WorkerCrashed):
        remote(scribble_over_own_rings)().run()
    assert crashing.process.poll() is None
    for value in range(4):
        assert remote(abs)(-value).run() == value


def test_names_squatted_by_someone_else_do_not_stop_the_gateway(
    start_gateway, tmp_path, monkeypatch
):
    # What earlier versions used, taken by someone else: the runtime
    # directory (here a file where the directory would go) and segment
    # names in /dev/shm. The gateway names nothing, so none of it matters.
    squat = tmp_path / "xdg"
    squat.mkdir(mode=0o777)
    (squat / "mysticchallenge").write_text("not yours")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(squat))
    squatted = [pathlib.Path(f"/dev/shm/mystic-squat-{os.getpid()}-{n}") for n in range(3)]
    for path in squatted:
        path.write_bytes(b"")
    try:
        gateway = start_gateway()
        remote = compute_this(server=gateway.url)
        assert remote(abs)(-7).run() == 7
        for pid in gateway.worker_pids() - {0}:
            os.kill(pid, signal.SIGKILL)  # restarts too
        gateway.wait_for(lambda g: g.restarts() >= 2, "both workers to be restarted")
        assert remote(abs)(-8).run() == 8
    finally:
        for path in squatted:
            path.unlink()
    assert (squat / "mysticchallenge").read_text() == "not yours"
