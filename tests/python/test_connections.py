"""Connections, on both transports: with ``--idle-connection-timeout``, a
connection with no call is closed and the client reconnects on its next
call; a call that runs longer than the timeout is not cut off."""

from __future__ import annotations

import pathlib
import time

from system_state import wait_until

from distribute_challenge import compute_this

ESTABLISHED = "01"


def connections_to(url: str) -> int:
    """Established TCP connections whose local end is the gateway's port."""
    port = f"{int(url.rsplit(':', 1)[1]):04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port}") and fields[3] == ESTABLISHED:
                count += 1
    return count


def hold(seconds):
    time.sleep(seconds)
    return seconds


def test_an_idle_connection_is_closed_but_a_long_call_is_not(start_gateway):
    gateway = start_gateway("--idle-connection-timeout", "1")
    remote = compute_this(server=gateway.url)(hold)
    # Longer than the timeout, with no byte crossing meanwhile.
    assert remote(2.5).run() == 2.5
    assert connections_to(gateway.url) >= 1
    # Idle now: the gateway closes the connection.
    wait_until(lambda: connections_to(gateway.url) == 0, "the idle connection to be closed", 10)
    # The same channel reconnects for the next call.
    assert remote(0).run() == 0
    assert connections_to(gateway.url) >= 1
