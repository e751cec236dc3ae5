"""Calls through the real gateway that raise or print: the function's own
exceptions come back with type, message and remote traceback; what it printed
is replayed on the caller's stdout/stderr; the worker survives all of it."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import traceback

import pytest

from distribute_challenge import RemoteError


class InsufficientFunds(Exception):
    """A custom exception with its own ``__init__`` and attributes."""

    def __init__(self, balance, needed):
        super().__init__(f"balance {balance} is below {needed}")
        self.balance = balance
        self.needed = needed


class HoldsALock(Exception):
    def __init__(self):
        super().__init__("this exception holds a lock")
        self.lock = threading.Lock()


def divide(a, b):
    return a / b


def withdraw(balance, amount):
    if amount > balance:
        raise InsufficientFunds(balance, amount)
    return balance - amount


def chained():
    try:
        {}["missing"]
    except KeyError as exc:
        raise RuntimeError("lookup failed") from exc


def raise_unpicklable():
    raise HoldsALock()


def exit_with(code):
    sys.exit(code)


def interrupt():
    raise KeyboardInterrupt("stop")


def chatty(fail):
    print("to stdout", 1, 2)
    print("to stderr", file=sys.stderr)
    if fail:
        raise ValueError("failed after printing")
    return "done"


def writes_to_fd_1():
    os.write(1, b"raw bytes on fd 1\n")
    sys.stdout.flush()
    return "result intact"


def pid():
    return os.getpid()


def test_builtin_exception_type_and_message(remote):
    with pytest.raises(ZeroDivisionError, match="division by zero"):
        remote(divide)(1, 0).run()


def test_the_remote_traceback_is_attached(remote):
    with pytest.raises(ZeroDivisionError) as caught:
        remote(divide)(1, 0).run()
    text = "".join(traceback.format_exception(caught.value))
    assert f"line {divide.__code__.co_firstlineno + 1}, in divide" in text
    assert "return a / b" in text
    assert __file__ in text


def test_custom_exceptions_keep_their_attributes(remote):
    with pytest.raises(InsufficientFunds, match="balance 5 is below 9") as caught:
        remote(withdraw)(5, 9).run()
    assert (caught.value.balance, caught.value.needed) == (5, 9)
    assert "in withdraw" in "".join(traceback.format_tb(caught.value.__traceback__))


def test_local_exception_classes_keep_their_identity(remote):
    class LocalError(LookupError):
        pass

    def fail():
        raise LocalError("local")

    with pytest.raises(LocalError, match="local"):
        remote(fail)().run()


def test_exception_chains_survive(remote):
    with pytest.raises(RuntimeError, match="lookup failed") as caught:
        remote(chained)().run()
    assert isinstance(caught.value.__cause__, KeyError)
    assert caught.value.__cause__.args == ("missing",)


def test_an_unpicklable_exception_comes_back_as_remote_error(remote):
    with pytest.raises(RemoteError) as caught:
        remote(raise_unpicklable)().run()
    error = caught.value
    assert error.type_name.endswith("HoldsALock")
    assert error.message == "this exception holds a lock"
    assert "in raise_unpicklable" in error.remote_traceback
    assert "HoldsALock" in str(error)


@pytest.mark.parametrize("code", [0, 3, "message"])
def test_system_exit_comes_back_and_the_worker_survives(remote, gateway, code):
    restarts = gateway.restarts()
    with pytest.raises(SystemExit) as caught:
        remote(exit_with)(code).run()
    assert caught.value.code == code
    assert remote(divide)(6, 3).run() == 2
    assert gateway.restarts() == restarts


def test_keyboard_interrupt_comes_back_and_the_worker_survives(remote, gateway):
    restarts = gateway.restarts()
    with pytest.raises(KeyboardInterrupt, match="stop"):
        remote(interrupt)().run()
    assert remote(divide)(6, 3).run() == 2
    assert gateway.restarts() == restarts


@pytest.mark.parametrize("fail", [False, True], ids=["returns", "raises"])
def test_output_is_replayed_on_the_caller(remote, capsys, fail):
    call = remote(chatty)(fail)
    if fail:
        with pytest.raises(ValueError, match="failed after printing"):
            call.run()
    else:
        assert call.run() == "done"
    captured = capsys.readouterr()
    assert captured.out == "to stdout 1 2\n"
    assert captured.err == "to stderr\n"


def test_output_is_replayed_after_async_run(remote, capsys):
    assert asyncio.run(remote(chatty)(False).async_run()) == "done"
    assert capsys.readouterr().out == "to stdout 1 2\n"


def test_raw_fd_1_writes_do_not_break_the_result(remote, gateway):
    restarts = gateway.restarts()
    for _ in range(3):
        assert remote(writes_to_fd_1)().run() == "result intact"
    assert gateway.restarts() == restarts
