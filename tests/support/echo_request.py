"""Writes an encoded call of `echo(b"x" * N)` to stdout, for the transport
benchmarks: `python tests/support/echo_request.py N > request.bin`."""

import sys

from mystic_wire import encode_request


def echo(data):
    return data


if __name__ == "__main__":
    size = int(sys.argv[1])
    sys.stdout.buffer.write(encode_request(echo, (b"x" * size,), {}, ()))
