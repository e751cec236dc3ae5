"""When a call is retried: only while the gateway's queue is full.

A call refused with ``RESOURCE_EXHAUSTED`` and the trailing ``mystic-error:
queue-full`` never reached a worker, so sending it again is safe. Every other
failure, ``payload-too-large`` included, is final (a crashed or timed-out call
may have had effects; an oversized payload stays oversized).

Policy: exponential backoff with jitter. The n-th wait is drawn uniformly from
``[d/2, d]`` with ``d = min(FIRST_DELAY * 2**n, MAX_DELAY)`` (10 ms doubling to
1 s), so that callers refused together do not come back together. Retries
stop at whichever comes first: the call's own ``timeout`` (which bounds the
whole call, retries included: each attempt gets what is left of it) or its
``busy_timeout`` (60 s by default; 0 never retries). A wait that would end
past that point is not started: the call fails with ``ServerBusy`` at once.
Against the call's own deadline a wait must also leave the attempt after it
at least as long again, so that the last attempt is refused (``ServerBusy``)
rather than cut short by the deadline (``CallTimeout``).

A gateway started with ``--max-queue-wait`` refuses, with ``queue-wait``, a
call that no worker took within that time, so that it can run elsewhere:
such a refusal is sent on at once, every time, within the call's own
``timeout`` only (``busy_timeout`` does not apply: the wait happened at the
gateway, which bounds how often a call comes back). This needs that gateway
flag, which the gateway does not have yet.

With several gateways (a balanced target) the channel's ``round_robin``
sends each attempt to the next gateway, so the first refusals are sent again
at once, one fewer than there are gateways (``others``): a call refused by a
full gateway tries the others before it waits.

``Call.run`` and ``Call.async_run`` both drive one :class:`BusyRetry` per call;
they differ only in how they sleep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from mystic_native import CallFailed

from ._status import QUEUE_WAIT, refusal

FIRST_DELAY = 0.01
MAX_DELAY = 1.0
DEFAULT_BUSY_TIMEOUT = 60.0


class BusyRetry:
    """The retry state of one call.

    Args:
        timeout: the call's own deadline in seconds from now, or None.
        busy_timeout: how long to keep retrying while the queue is full.
        clock: a monotonic clock (seconds).
        uniform: ``random.uniform``-like jitter source.
        others: how many other gateways the call may be sent to at once
            after a refusal; asked at the first refusal (it may resolve a name).
    """

    def __init__(
        self,
        timeout: float | None,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        uniform: Callable[[float, float], float] = random.uniform,
        others: Callable[[], int] = lambda: 0,
    ) -> None:
        self._others = others
        self._elsewhere: int | None = None
        self._clock = clock
        self._uniform = uniform
        self.started = clock()
        self._deadline = None if timeout is None else self.started + timeout
        give_up = self.started + busy_timeout
        self._give_up = give_up if self._deadline is None else min(give_up, self._deadline)
        self.attempts = 0
        self._delay = FIRST_DELAY

    def attempt_timeout(self) -> float | None:
        """The gRPC timeout for the next attempt: what is left of the call's own.
        Counts the attempt."""
        self.attempts += 1
        if self._deadline is None:
            return None
        return max(self._deadline - self._clock(), 0.0)

    def next_delay(self, error: CallFailed) -> float | None:
        """How long to wait before sending the call again after ``error``, or
        None when the call must fail with ``error``."""
        kind = refusal(error)
        if kind is None:
            return None
        if kind == QUEUE_WAIT:
            # The gateway already held the call for its --max-queue-wait: send
            # it on at once, to the next gateway; only the call's own timeout
            # bounds this (the call is waiting its turn, not being turned away).
            if self._deadline is not None and self._clock() >= self._deadline:
                return None
            return 0.0
        if self._elsewhere is None:
            self._elsewhere = max(self._others(), 0)
        if self._elsewhere > 0:
            self._elsewhere -= 1
            return 0.0 if self._clock() < self._give_up else None
        delay = self._uniform(self._delay / 2, self._delay)
        now = self._clock()
        if now + delay >= self._give_up:
            return None
        if self._deadline is not None and now + 2 * delay > self._deadline:
            return None
        self._delay = min(self._delay * 2, MAX_DELAY)
        return delay

    def summary(self) -> str:
        """For the final error message: how hard the call tried."""
        if self.attempts <= 1:
            return ""
        elapsed = self._clock() - self.started
        return f"the call was sent {self.attempts} times over {elapsed:.1f}s"
