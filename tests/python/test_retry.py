"""Calls refused because the gateway's queue is full are sent again.

The policy (``distribute_challenge._retry``) with a fake clock first, then
end to end: a gateway with one worker and a queue of one, many concurrent
calls, every one of which succeeds thanks to retries; and the calls that
cannot be retried (``busy_timeout=0``, or a ``timeout`` that runs out while
the queue stays full) raise ``ServerBusy``.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from distribute_challenge import PayloadTooLarge, ServerBusy, _retry, compute_this
from distribute_challenge._retry import FIRST_DELAY, MAX_DELAY, BusyRetry
from distribute_challenge._status import StatusCode as S
from distribute_challenge._status import parts
from mystic_native import CallFailed


def refused(code, kind=None, details="refused"):
    """A failed call as the client reports it."""
    return CallFailed(code, details, kind)


QUEUE_FULL = refused(S.RESOURCE_EXHAUSTED, "queue-full", "the gateway's queue is full")
# What a gateway started with --max-queue-wait sends (that flag is not in the gateway yet).
QUEUE_WAIT = refused(S.RESOURCE_EXHAUSTED, "queue-wait", "no worker was free in time")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def upper(low, high):
    return high


def lower(low, high):
    return low


def test_waits_double_from_10ms_to_1s():
    clock = Clock()
    retry = BusyRetry(None, busy_timeout=1e9, clock=clock, uniform=upper)
    delays = []
    for _ in range(12):
        retry.attempt_timeout()
        delay = retry.next_delay(QUEUE_FULL)
        delays.append(delay)
        clock.now += delay
    assert delays[:8] == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0])
    assert delays[8:] == pytest.approx([MAX_DELAY] * 4)
    assert retry.attempts == 12


def test_jitter_draws_from_the_upper_half_of_each_wait():
    seen = []

    def record(low, high):
        seen.append((low, high))
        return (low + high) / 2

    retry = BusyRetry(None, clock=Clock(), uniform=record)
    first = retry.next_delay(QUEUE_FULL)
    retry.next_delay(QUEUE_FULL)
    assert seen == [(FIRST_DELAY / 2, FIRST_DELAY), (FIRST_DELAY, 2 * FIRST_DELAY)]
    assert first == pytest.approx(0.75 * FIRST_DELAY)


def test_the_real_jitter_stays_in_bounds():
    retry = BusyRetry(None)
    for expected in (0.01, 0.02, 0.04):
        delay = retry.next_delay(QUEUE_FULL)
        assert expected / 2 <= delay <= expected


@pytest.mark.parametrize(
    "error",
    [
        refused(S.RESOURCE_EXHAUSTED, "payload-too-large", "over the limit"),
        refused(S.RESOURCE_EXHAUSTED, None, "Sent message larger than max"),
        refused(S.RESOURCE_EXHAUSTED, None, "queue is full"),  # not from the gateway
        refused(S.ABORTED, "worker-crashed"),
        refused(S.DEADLINE_EXCEEDED, "call-timeout"),
        refused(S.UNAVAILABLE, "unavailable"),
        refused(S.INVALID_ARGUMENT, "invalid-request"),
        refused(S.UNAUTHENTICATED),
    ],
    ids=lambda error: f"{parts(error)[0].name}-{error.args[2]}",
)
def test_only_queue_full_is_retried(error):
    assert BusyRetry(None).next_delay(error) is None


def test_retries_stop_at_the_busy_timeout():
    clock = Clock()
    retry = BusyRetry(None, busy_timeout=3.0, clock=clock, uniform=upper)
    total = 0.0
    while (delay := retry.next_delay(QUEUE_FULL)) is not None:
        total += delay
        clock.now += delay
    assert total < 3.0
    # Retrying went on until the next wait (1 s by then) would end past the budget.
    assert total + MAX_DELAY >= 3.0


def test_with_other_gateways_the_first_refusals_are_sent_again_at_once():
    clock = Clock()
    asked = []
    retry = BusyRetry(None, clock=clock, uniform=upper, others=lambda: asked.append(1) or 2)
    assert [retry.next_delay(QUEUE_FULL) for _ in range(4)] == [0.0, 0.0, FIRST_DELAY, 0.02]
    assert asked == [1]  # the number of gateways is asked for once, at the first refusal


def test_refusals_sent_elsewhere_still_stop_at_the_busy_timeout():
    clock = Clock()
    retry = BusyRetry(None, busy_timeout=1.0, clock=clock, others=lambda: 5)
    assert retry.next_delay(QUEUE_FULL) == 0.0
    clock.now += 1.0
    assert retry.next_delay(QUEUE_FULL) is None


def test_a_queue_wait_refusal_is_sent_on_at_once_past_the_busy_timeout():
    clock = Clock()
    retry = BusyRetry(None, busy_timeout=1.0, clock=clock, uniform=upper)
    delays = []
    for _ in range(50):
        delays.append(retry.next_delay(QUEUE_WAIT))
        clock.now += 0.1  # each refusal came after the gateway's wait
    assert delays == [0.0] * 50
    assert retry.next_delay(QUEUE_FULL) is None  # a full queue still ends at busy_timeout


def test_queue_wait_refusals_leave_the_backoff_where_it_was():
    retry = BusyRetry(None, busy_timeout=1e9, clock=Clock(), uniform=upper)
    assert [retry.next_delay(QUEUE_WAIT) for _ in range(3)] == [0.0] * 3
    assert retry.next_delay(QUEUE_FULL) == FIRST_DELAY


def test_queue_wait_refusals_stop_at_the_call_timeout():
    clock = Clock()
    retry = BusyRetry(2.0, clock=clock)
    assert retry.next_delay(QUEUE_WAIT) == 0.0
    clock.now += 2.0
    assert retry.next_delay(QUEUE_WAIT) is None


def test_a_zero_busy_timeout_never_retries():
    assert BusyRetry(None, busy_timeout=0, clock=Clock()).next_delay(QUEUE_FULL) is None


def test_the_call_timeout_bounds_retries_and_each_attempt():
    clock = Clock()
    retry = BusyRetry(2.0, busy_timeout=60.0, clock=clock, uniform=lower)
    assert retry.attempt_timeout() == pytest.approx(2.0)
    waited = 0.0
    while (delay := retry.next_delay(QUEUE_FULL)) is not None:
        clock.now += delay
        waited += delay
        remaining = retry.attempt_timeout()
        assert remaining == pytest.approx(2.0 - waited)
        # The attempt after a wait gets at least as long as the wait.
        assert remaining >= delay
    assert waited < 2.0
    assert retry.attempts > 5


def test_without_a_timeout_attempts_have_no_deadline():
    retry = BusyRetry(None)
    assert retry.attempt_timeout() is None


def test_the_summary_counts_attempts():
    clock = Clock()
    retry = BusyRetry(None, clock=clock, uniform=upper)
    retry.attempt_timeout()
    assert retry.summary() == ""
    clock.now += retry.next_delay(QUEUE_FULL)
    retry.attempt_timeout()
    clock.now += 1.0
    assert retry.summary() == "the call was sent 2 times over 1.0s"


@pytest.mark.parametrize("busy_timeout", [-1, "5", True, float("nan")])
def test_busy_timeout_is_validated(busy_timeout):
    with pytest.raises(ValueError, match="busy_timeout"):
        compute_this(busy_timeout=busy_timeout)


# End to end -------------------------------------------------------------------

CALLS = 20


def square_slowly(x):
    time.sleep(0.05)
    return x * x


def hold(started, release, value):
    """Occupies a worker until the test creates ``release``."""
    pathlib.Path(started).touch()
    while not os.path.exists(release):
        time.sleep(0.01)
    return value


def square(x):
    return x * x


@pytest.fixture
def counted_attempts(monkeypatch):
    """Counts every attempt made by every call's BusyRetry."""
    attempts = []

    class Counting(BusyRetry):
        def attempt_timeout(self):
            attempts.append(1)
            return super().attempt_timeout()

    monkeypatch.setattr(_retry, "BusyRetry", Counting)
    return attempts


@pytest.fixture
def one_slot(start_gateway):
    """A gateway that runs one call and queues one more."""
    return start_gateway("--workers", "1", "--queue-capacity", "1")


def test_many_concurrent_async_calls_all_succeed(one_slot, counted_attempts):
    remote = compute_this(server=one_slot.url)(square_slowly)

    async def burst():
        return await asyncio.gather(*(remote(x).async_run() for x in range(CALLS)))

    assert asyncio.run(burst()) == [x * x for x in range(CALLS)]
    assert len(counted_attempts) > CALLS, "the queue of one never refused a call"


def test_many_concurrent_blocking_calls_all_succeed(one_slot, counted_attempts):
    remote = compute_this(server=one_slot.url)(square_slowly)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda x: remote(x).run(), range(CALLS)))
    assert results == [x * x for x in range(CALLS)]
    assert len(counted_attempts) > CALLS, "the queue of one never refused a call"


@pytest.fixture
def held(one_slot, tmp_path):
    """Fills ``one_slot`` until the test ends: one call running (until the
    file ``release`` exists) and one queued. Two calls that may not retry
    race for the only queue slot once the first one runs: exactly one is
    queued, the other is refused."""
    release = tmp_path / "release"
    on = compute_this(server=one_slot.url)
    no_retry = compute_this(server=one_slot.url, busy_timeout=0)
    outcomes: dict[str, object] = {}

    def run(name, call):
        try:
            outcomes[name] = call.run()
        except ServerBusy as exc:
            outcomes[name] = exc

    threads = [
        threading.Thread(
            target=run, args=("running", on(hold)(str(tmp_path / "running"), str(release), 1))
        )
    ]
    threads[0].start()
    try:
        one_slot.wait_for(lambda g: (tmp_path / "running").exists(), "the first call to start")
        for name in ("a", "b"):
            threads.append(threading.Thread(target=run, args=(name, no_retry(square)(7))))
            threads[-1].start()
        one_slot.wait_for(
            lambda g: any(isinstance(value, ServerBusy) for value in outcomes.values()),
            "one of two racing calls to be refused",
        )
        yield one_slot
    finally:
        release.touch()
        for thread in threads:
            thread.join(60)
    assert outcomes["running"] == 1
    raced = [outcomes["a"], outcomes["b"]]
    assert 49 in raced, "the queued call did not run after the release"
    assert any(isinstance(value, ServerBusy) for value in raced)


def test_a_zero_busy_timeout_raises_server_busy_at_once(held, counted_attempts):
    counted_attempts.clear()
    remote = compute_this(server=held.url, busy_timeout=0)(square)
    with pytest.raises(ServerBusy, match="queue is full") as caught:
        remote(2).run()
    assert parts(caught.value.__cause__)[0] == S.RESOURCE_EXHAUSTED
    with pytest.raises(ServerBusy, match="queue is full"):
        asyncio.run(remote(2).async_run())
    assert len(counted_attempts) == 2


@pytest.mark.parametrize("twin", ["run", "async_run"])
def test_a_call_timeout_ends_retries_with_server_busy(held, twin):
    call = compute_this(server=held.url, timeout=1.5)(square)(2)
    with pytest.raises(ServerBusy) as caught:
        if twin == "run":
            call.run()
        else:
            asyncio.run(call.async_run())
    sent = re.search(r"the call was sent (\d+) times", str(caught.value))
    assert sent is not None, str(caught.value)
    assert int(sent.group(1)) > 1


def test_payload_too_large_is_not_retried(start_gateway, counted_attempts):
    gateway = start_gateway("--max-payload-bytes", "1000")
    with pytest.raises(PayloadTooLarge):
        compute_this(server=gateway.url)(square)(b"x" * 5000).run()
    assert len(counted_attempts) == 1
