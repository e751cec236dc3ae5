"""Encoded calls for the Rust integration tests, printed as `name base64` lines.

The Rust tests cannot pickle Python functions, so this script encodes them
with the real payload codec (`mystic_wire`); the tests look for marker bytes in the responses.
"""

import base64
import ctypes
import os
import signal
import sys
import time

from mystic_wire import encode_request


def marker():
    return b"rust-integration-marker"


def pid_after_sleep():
    time.sleep(0.05)
    return b"pid:%d;" % os.getpid()


def sleep_1s():
    time.sleep(1)
    return b"slept"


def sleep_10s():
    time.sleep(10)
    return b"slept"


def exit_3():
    os._exit(3)


def segfault():
    ctypes.string_at(0)


def sigkill():
    os.kill(os.getpid(), signal.SIGKILL)


def fd_writes():
    os.write(1, b"raw-fd-1-write\n")
    return b"written"


def result_20k():
    return b"x" * 20_000


def result_4m():
    return b"r" * (4 << 20)


def echo_1m(_ballast=b""):
    data = bytes(range(256)) * 4096
    return data + data[::-1]


CALLS = [marker, pid_after_sleep, sleep_1s, sleep_10s, exit_3, segfault, sigkill, fd_writes]
CALLS += [result_20k, result_4m, echo_1m]

if __name__ == "__main__":
    for function in CALLS:
        # echo_1m also sends 1 MiB, to stream through small rings both ways.
        args = (b"z" * (1 << 20),) if function is echo_1m else ()
        payload = encode_request(function, args, {}, ())
        sys.stdout.write(f"{function.__name__} {base64.b64encode(payload).decode()}\n")
