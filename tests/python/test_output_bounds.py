"""What a function prints, and what its worker writes to its own stderr, stay
bounded, on both transports.

- Printed output: the worker keeps the first and the last half of
  ``--max-output-bytes`` of each stream (``worker_shim/_output.py``); the
  caller gets them back with a line saying how much was dropped between
  them, and the worker's peak RSS stays far below what was printed, for
  many prints, one enormous write, and a streamed call's items alike. The
  worker is the same process afterwards and serves the next call.
- Lines written straight to fd 2 reach the gateway's log rate-limited per
  worker (``src/pool/throttle.rs``), with a line saying how many were
  dropped: the log grows by far less than was written.

Each function resets its worker's peak RSS (``/proc/self/clear_refs``) once
it has made what it prints, and returns the RSS it then had: the peak read
after the call is the call's own.
"""

from __future__ import annotations

import os
import re
import sys

from system_state import status_kib

from distribute_challenge import compute_this

MiB = 1 << 20
BOUND = MiB  # --max-output-bytes: half a MiB of head, half a MiB of tail
# What a call may add to its worker's RSS besides what it printed: the kept
# output, its response, allocator slack.
GROWTH = 48 * MiB
_DROPPED = re.compile(r"\((\d+) bytes\) of (stdout|stderr) dropped")


def start_small_bound(start_gateway, *flags: str):
    return start_gateway("--workers", "1", "--max-output-bytes", str(BOUND), *flags)


def reset_peak() -> int:
    """In the worker: resets its peak RSS; returns its RSS now, in bytes."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def prints_lines(megabytes):
    line = "x" * 1023
    rss = reset_peak()
    print("first line")
    for _ in range(megabytes * 1024):
        print(line)
    print("last line", file=sys.stdout)
    return os.getpid(), rss


def writes_once(megabytes):
    text = "".join(["<", "y" * (megabytes * MiB), ">"])
    rss = reset_peak()
    sys.stdout.write(text)
    return os.getpid(), rss


def prints_between_items(megabytes):
    rss = reset_peak()
    line = "z" * 1023
    for item in range(2):
        print(f"start of item {item}")
        for _ in range(megabytes * 1024):
            print(line)
        print(f"end of item {item}")
        yield os.getpid(), rss


def floods_fd_2(megabytes):
    block = (b"e" * 99 + b"\n") * 10_000  # a MB of 100-byte lines
    for _ in range(megabytes):
        view = memoryview(block)
        while view:
            view = view[os.write(2, view) :]
    return os.getpid()


def pid():
    return os.getpid()


def split(out: str) -> tuple[str, int, str]:
    """Replayed output as its head, the bytes said dropped, and its tail."""
    note = _DROPPED.search(out)
    assert note is not None, out[:300]
    start, end = out.rfind("\n[... ", 0, note.start()), out.find("...]\n", note.end()) + 5
    assert out.count("dropped: the worker keeps") == 1
    return out[:start], int(note.group(1)), out[end:]


def assert_bounded_peak(gateway, worker: int, rss: int, printed: int) -> None:
    peak = status_kib(worker, "VmHWM") * 1024
    print(f"worker {worker}: peak RSS {(peak - rss) / MiB:.1f} MiB over {rss / MiB:.1f} MiB")
    assert peak - rss < GROWTH, (
        f"the worker's peak RSS grew by {(peak - rss) / MiB:.0f} MiB while its call printed "
        f"{printed / MiB:.0f} MiB"
    )
    assert gateway.worker_pids() == {worker}
    assert gateway.restarts() == 0


def test_a_call_that_prints_far_more_than_the_bound_keeps_head_and_tail(start_gateway, capsys):
    gateway = start_small_bound(start_gateway)
    megabytes = 200
    worker, rss = compute_this(server=gateway.url)(prints_lines)(megabytes).run()
    out = capsys.readouterr().out
    printed = len("first line\n") + megabytes * MiB + len("last line\n")
    assert_bounded_peak(gateway, worker, rss, printed)
    head, dropped, tail = split(out)
    assert head.startswith("first line\n" + "x" * 1023 + "\n")
    assert tail.endswith("x" * 1023 + "\nlast line\n")
    assert (len(head), len(tail)) == (BOUND // 2, BOUND // 2)
    assert len(head) + dropped + len(tail) == printed
    # The same worker serves the next call.
    assert compute_this(server=gateway.url)(pid)().run() == worker


def test_one_enormous_write_is_bounded_too(start_gateway, capsys):
    # Directly started workers get the bound as an argument too (forked ones
    # through the template, above).
    gateway = start_small_bound(start_gateway, "--no-template")
    megabytes = 150
    worker, rss = compute_this(server=gateway.url)(writes_once)(megabytes).run()
    out = capsys.readouterr().out
    assert_bounded_peak(gateway, worker, rss, megabytes * MiB)
    head, dropped, tail = split(out)
    assert head == "<" + "y" * (BOUND // 2 - 1)
    assert tail == "y" * (BOUND // 2 - 1) + ">"
    assert dropped == megabytes * MiB + 2 - BOUND
    assert compute_this(server=gateway.url)(pid)().run() == worker


def test_a_streamed_call_bounds_what_each_chunk_printed(start_gateway, capsys):
    gateway = start_small_bound(start_gateway)
    megabytes = 50
    items = list(compute_this(server=gateway.url)(prints_between_items)(megabytes).stream())
    assert len(items) == 2
    worker, rss = items[0]
    out = capsys.readouterr().out
    assert_bounded_peak(gateway, worker, rss, 2 * megabytes * MiB)
    assert len(_DROPPED.findall(out)) == 2, "one note per item's chunk"
    for item in range(2):
        assert f"start of item {item}\n" in out
        assert f"end of item {item}\n" in out
    assert len(out) < 2 * (BOUND + 1024)


def test_a_flood_on_fd_2_reaches_the_log_rate_limited(start_gateway):
    gateway = start_gateway("--workers", "1")
    before = len(gateway.log())
    megabytes = 50
    worker = compute_this(server=gateway.url)(floods_fd_2)(megabytes).run()
    report = re.compile(rf"dropped (\d+) stderr lines of worker 0 \(pid {worker}\)")
    gateway.wait_for(lambda gateway: report.search(gateway.log()), "the dropped-lines line")
    log = gateway.log()
    grown = len(log) - before
    print(f"the log grew by {grown / 1024:.0f} KiB for {megabytes} MB written to fd 2")
    assert grown < MiB, f"the log grew by {grown} bytes for {megabytes} MB written to fd 2"
    logged = log.count("e" * 99)
    dropped = sum(int(found) for found in report.findall(log))
    assert logged + dropped <= megabytes * 10_000
    assert dropped > 0 and logged > 0
    assert compute_this(server=gateway.url)(pid)().run() == worker
    assert gateway.restarts() == 0
