"""The worker's sink for what a call prints (``worker_shim/_output.py``), alone:
the head and the tail it keeps, the bytes it says it dropped, cuts between
characters, and memory bounded by its bound for many tiny writes and for
one enormous write. No gateway needed."""

from __future__ import annotations

import contextlib
import io
import re
import sys
import threading
import tracemalloc

import pytest

from worker_shim import _output
from worker_shim._output import BoundedText

_NOTE = re.compile(
    r"\n\[\.\.\. (?:[\d.]+ [KMG]iB \()?(\d+) bytes\)? of (stdout|stderr) dropped: [^\n]*"
    r"\(--max-output-bytes\) \.\.\.\]\n"
)


def split(value: str) -> tuple[str, int, str]:
    """A sink's value as its head, the bytes it says it dropped, and its tail."""
    found = list(_NOTE.finditer(value))
    assert len(found) == 1, value[:200]
    note = found[0]
    return value[: note.start()], int(note.group(1)), value[note.end() :]


def utf8(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def test_what_fits_is_kept_whole():
    sink = BoundedText("stdout", 1000)
    with contextlib.redirect_stdout(sink):
        print("hello", 1, 2)
        print("é😀", end="")
        print(flush=True)
    sink.writelines(["a\n", "b\n"])
    assert sink.write("c") == 1
    assert sink.getvalue() == "hello 1 2\né😀\na\nb\nc"


def test_it_is_a_text_file_as_print_and_libraries_expect():
    sink = BoundedText("stderr", 10)
    assert isinstance(sink, io.TextIOBase)
    assert sink.writable() and not sink.readable() and not sink.seekable()
    assert not sink.isatty()
    assert sink.encoding == "utf-8"
    sink.flush()
    with pytest.raises(TypeError, match="string argument expected"):
        sink.write(b"bytes")
    with pytest.raises(io.UnsupportedOperation):
        sink.fileno()


def test_head_and_tail_are_kept_and_the_rest_counted():
    sink = BoundedText("stdout", 100)
    written = "".join(f"{n:04d}\n" for n in range(1000))
    for line in written.splitlines(keepends=True):
        sink.write(line)
    head, dropped, tail = split(sink.getvalue())
    assert head == written[:50]
    assert tail == written[-50:]
    assert dropped == len(written) - 100


def test_the_note_names_its_stream_and_sizes_in_words():
    sink = BoundedText("stderr", 4 << 20)
    sink.write("x" * (10 << 20))
    value = sink.getvalue()
    assert "[... 6 MiB (6291456 bytes) of stderr dropped: the worker keeps the first and" in value
    assert "the last 2 MiB of what a call prints to it (--max-output-bytes) ...]" in value
    _, dropped, _ = split(value)
    assert dropped == 6 << 20


@pytest.mark.parametrize("char", ["é", "€", "😀", "\udc80"])
def test_cuts_fall_between_characters(char):
    # 2, 3, 4 and (a lone surrogate, as pickle writes it) 3 bytes each: a
    # bound of 11 falls inside one at both ends.
    for writes in ([char * 40], [char] * 40):
        sink = BoundedText("stdout", 11)
        for text in writes:
            sink.write(text)
        head, dropped, tail = split(sink.getvalue())
        assert head == char * (5 // utf8(char))
        assert tail == char * (6 // utf8(char))
        assert utf8(head) + dropped + utf8(tail) == 40 * utf8(char)


def test_a_write_that_crosses_from_head_to_tail_keeps_both_ends():
    sink = BoundedText("stdout", 20)
    sink.write("0123456")
    sink.write("abcdefghijklmnopqrstuvwxyz")
    head, dropped, tail = split(sink.getvalue())
    assert (head, tail) == ("0123456abc", "qrstuvwxyz")
    assert dropped == 33 - 20


def test_a_bound_of_zero_keeps_only_the_note():
    sink = BoundedText("stdout", 0)
    sink.write("abc")
    value = sink.getvalue()
    assert split(value) == ("", 3, "")
    assert "keeps none of what a call prints" in value
    assert BoundedText("stdout", 0).getvalue() == ""


def test_many_tiny_writes_keep_memory_bounded_and_the_last_writes():
    bound = 64 << 10
    sink = BoundedText("stdout", bound)
    tracemalloc.start()
    try:
        for n in range(300_000):
            sink.write(str(n % 10))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The kept text, a piece being filled, and the pieces' bookkeeping.
    assert peak < 4 * bound + (256 << 10), peak
    head, dropped, tail = split(sink.getvalue())
    expected = "0123456789" * 30_000
    assert head == expected[: bound // 2]
    assert tail == expected[-bound // 2 :]
    assert dropped == 300_000 - bound


def test_one_enormous_write_is_cut_without_a_copy_of_it():
    bound = 1 << 20
    text = "".join(["<", "y" * (200 << 20), ">"])
    sink = BoundedText("stdout", bound)
    tracemalloc.start()
    try:
        sink.write(text)
        value = sink.getvalue()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * bound, peak
    head, dropped, tail = split(value)
    assert head == "<" + "y" * (bound // 2 - 1)
    assert tail == "y" * (bound // 2 - 1) + ">"
    assert dropped == len(text) - bound


def test_an_enormous_non_ascii_write_is_measured_a_slice_at_a_time():
    bound = 1 << 20
    text = "é" * (20 << 20)
    sink = BoundedText("stdout", bound)
    tracemalloc.start()
    try:
        sink.write(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * bound, peak
    head, dropped, tail = split(sink.getvalue())
    assert head == tail == "é" * (bound // 4)
    assert dropped == 2 * len(text) - bound


def test_threads_writing_at_once_lose_no_count():
    sink = BoundedText("stdout", 1000)

    def write():
        for _ in range(10_000):
            sink.write("ab")

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    head, dropped, tail = split(sink.getvalue())
    assert utf8(head) + dropped + utf8(tail) == 4 * 10_000 * 2


def test_a_closed_sink_refuses_writes_and_still_gives_its_value():
    sink = BoundedText("stdout", 100)
    sink.write("before")
    sink.close()
    with pytest.raises(ValueError, match="closed file"):
        sink.write("after")
    assert sink.getvalue() == "before"


def test_getvalue_never_raises(monkeypatch):
    sink = BoundedText("stdout", 100)
    sink.write("x")

    def fail(self):
        raise MemoryError

    monkeypatch.setattr(_output._Tail, "text", fail)
    assert "could not gather it" in sink.getvalue()


def test_the_worker_bound_comes_from_its_argument(monkeypatch):
    from worker_shim.__main__ import parse_args

    assert parse_args(["--transport", "pipe"]).max_output_bytes == _output.DEFAULT_MAX_BYTES
    args = parse_args(["--transport", "shm", "--max-output-bytes", "10"])
    assert args.max_output_bytes == 10
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with pytest.raises(SystemExit):
        parse_args(["--transport", "pipe", "--max-output-bytes", "-1"])
    monkeypatch.setattr(_output._SETTINGS, "max_bytes", 10)
    sink = _output.capture("stdout")
    sink.write("x" * 20)
    assert split(sink.getvalue()) == ("x" * 5, 10, "x" * 5)
