"""Soak: many calls with random payloads, some of which kill their worker.

Each call sends a random slice of random bytes (sizes log-uniform up to the
maximum, a few at the maximum itself) and gets back its index and the
SHA-256 of what the worker received; a third of them also echo the payload,
so large responses travel too. About 1% of the calls kill their worker,
alternately with ``os._exit`` and with SIGKILL of itself. The test asserts:

- every other call returns exactly its expected result (no call is lost,
  none gets another's result), and every killing call raises
  ``WorkerCrashed``; nothing else fails;
- the gateway restarted exactly one worker per killing call, and counted
  every other call as served;
- once the gateway has stopped (exit 0), this process's descendants, its
  open file descriptors and the shared-memory segments of its
  gateways are back where they were before the gateway started: none is
  left that was not there before.

Two sizes, one per run (both on each transport)::

    .venv/bin/python -m pytest tests/python/test_soak.py          # short: 1,500 calls up to 1 MiB
    MYSTIC_SOAK=full .venv/bin/python -m pytest tests/python/test_soak.py -s  # 20,000 up to 8 MiB

``-s`` shows the figures (calls, faults injected, results lost, wall time).
``MYSTIC_SOAK_SEED=N`` replays one run's choices.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field

import pytest
from system_state import descendants, open_fds, ring_segments, shm_entries

from distribute_challenge import WorkerCrashed, compute_this


@dataclass(frozen=True)
class Profile:
    calls: int
    max_bytes: int
    concurrency: int
    timeout: float  # pytest-timeout for the whole test


PROFILES = {
    "short": Profile(calls=1_500, max_bytes=1 << 20, concurrency=8, timeout=300),
    "full": Profile(calls=20_000, max_bytes=8 << 20, concurrency=8, timeout=1800),
}
MODE = os.environ.get("MYSTIC_SOAK", "short")
if MODE not in PROFILES:
    raise ValueError(f"MYSTIC_SOAK must be one of {sorted(PROFILES)}, not {MODE!r}")
PROFILE = PROFILES[MODE]
KILLER_SHARE = 0.01
SETTLE_TIMEOUT = 30.0


def work(index, mode, data):
    """Runs in the worker: dies when told to, else hashes (and maybe echoes) ``data``."""
    if mode == "exit":
        os._exit(7)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    digest = hashlib.sha256(data).hexdigest()
    return (index, digest, data) if mode == "echo" else (index, digest)


@dataclass
class Plan:
    """What each call sends, and what it must get back."""

    modes: list[str]
    slices: list[tuple[int, int]]  # (offset, size) in the random block
    block: bytes

    @classmethod
    def make(cls, profile: Profile, rng: random.Random) -> Plan:
        calls = profile.calls
        killers = set(rng.sample(range(calls), max(1, round(calls * KILLER_SHARE))))
        modes, slices = [], []
        for index in range(calls):
            if index in killers:
                modes.append("exit" if len(modes) % 2 else "kill")
            else:
                modes.append("echo" if rng.random() < 1 / 3 else "hash")
            if rng.random() < 0.005:
                size = profile.max_bytes
            else:
                size = int(2 ** rng.uniform(0, math.log2(profile.max_bytes)))
            slices.append((rng.randrange(profile.max_bytes - size + 1), size))
        return cls(modes, slices, rng.randbytes(profile.max_bytes))

    def payload(self, index: int) -> bytes:
        offset, size = self.slices[index]
        return self.block[offset : offset + size]

    def expected(self, index: int):
        data = self.payload(index)
        digest = hashlib.sha256(data).hexdigest()
        return (index, digest, data) if self.modes[index] == "echo" else (index, digest)

    @property
    def killers(self) -> int:
        return sum(mode in ("exit", "kill") for mode in self.modes)


@dataclass
class Tally:
    ok: int = 0
    crashed: int = 0
    lost: list[str] = field(default_factory=list)


async def _soak(url: str, plan: Plan, concurrency: int) -> Tally:
    remote = compute_this(server=url)(work)
    tally = Tally()
    limit = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        mode = plan.modes[index]
        async with limit:
            try:
                result = await remote(index, mode, plan.payload(index)).async_run()
            except WorkerCrashed as exc:
                if mode in ("exit", "kill"):
                    tally.crashed += 1
                else:
                    tally.lost.append(f"call {index} ({mode}): {exc!r}")
                return
            except Exception as exc:
                tally.lost.append(f"call {index} ({mode}): {exc!r}")
                return
        if mode in ("exit", "kill"):
            tally.lost.append(f"call {index} ({mode}) returned instead of crashing")
        elif result == plan.expected(index):
            tally.ok += 1
        else:
            tally.lost.append(f"call {index} ({mode}): wrong result {str(result)[:80]}")

    await asyncio.gather(*(one(index) for index in range(len(plan.modes))))
    return tally


def _our_segments() -> set[int]:
    """Segments mapped by processes below this one (other test runs on the
    machine make and drop their own)."""
    return {segment for pid in descendants() for segment in ring_segments(pid)}


def _settled(snapshot, what: str, before: set) -> None:
    """Waits until ``snapshot()`` holds nothing that was not there ``before``
    (closing sockets and reaping processes take a moment); fails with what is
    left over. (Something of an earlier test may have gone meanwhile.)"""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while extra := snapshot() - before:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not back: left over {sorted(extra)}")
        gc.collect()
        time.sleep(0.1)


def _warm_up_grpc() -> None:
    """Makes gRPC create its process-wide fds (event engine, pollers) before
    the baseline is taken, so that they do not count as leaks."""

    async def poke():
        try:
            await compute_this(server="grpc://127.0.0.1:1", timeout=0.5)(abs)(-1).async_run()
        except Exception:
            pass

    asyncio.run(poke())
    try:
        compute_this(server="grpc://127.0.0.1:1", timeout=0.5)(abs)(-1).run()
    except Exception:
        pass


@pytest.mark.timeout(PROFILE.timeout)
def test_soak(launcher, capsys):
    seed = int(os.environ.get("MYSTIC_SOAK_SEED") or random.SystemRandom().randrange(1 << 32))
    plan = Plan.make(PROFILE, random.Random(seed))
    _warm_up_grpc()
    gc.collect()
    fds_before = open_fds()
    processes_before = descendants()
    segments_before = _our_segments()
    shm_before = shm_entries()

    gateway = launcher.start()
    started = time.monotonic()
    try:
        tally = asyncio.run(_soak(gateway.url, plan, PROFILE.concurrency))
        wall = time.monotonic() - started
        gateway.wait_for(lambda g: g.restarts() == plan.killers, "one restart per killing call")
        served = gateway.calls_served()
    finally:
        launcher.stop(gateway)

    with capsys.disabled():
        print(
            f"\nsoak {MODE} on {launcher.transport} (seed {seed}): {len(plan.modes)} calls, "
            f"{plan.killers} faults injected, {tally.ok} correct, {tally.crashed} WorkerCrashed, "
            f"{len(tally.lost)} lost, {wall:.1f}s"
        )
    assert tally.lost == [], f"seed {seed}: {len(tally.lost)} calls lost: {tally.lost[:10]}"
    assert tally.crashed == plan.killers
    assert tally.ok == len(plan.modes) - plan.killers
    assert served == tally.ok

    _settled(_our_segments, "the shared-memory segments", segments_before)
    _settled(shm_entries, "what is in /dev/shm", shm_before)
    _settled(descendants, "the processes below this one", processes_before)
    _settled(open_fds, "this process's open fds", fds_before)
