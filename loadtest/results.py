"""What a load test measured against one gateway (or several: one pool), and
the figures derived from it: the original test's minimal time and
effectiveness, the makespan of an ideal FIFO list scheduler, throughput,
latency percentiles."""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GatewayShare:
    """What one gateway of the pool had and did in one factor."""

    url: str
    workers: int
    calls: int


@dataclass
class ParallelRun:
    """One factor of the original test."""

    factor: int
    workers: int
    sleeps: list[float]
    real: float
    served: list[int]  # calls served by each worker slot, gateway after gateway (then unseen ones)
    shares: list[GatewayShare] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.sleeps)

    @property
    def minimal(self) -> float:
        return sum(self.sleeps) / self.workers

    @property
    def effectiveness(self) -> float:
        return self.minimal / self.real * 100

    @property
    def ideal(self) -> float:
        return fifo_makespan(self.sleeps, self.workers)

    @property
    def fifo_efficiency(self) -> float:
        return self.ideal / self.real * 100

    def histogram(self) -> list[tuple[int, int]]:
        """(number of calls, number of workers that served that many), by calls."""
        return sorted(Counter(self.served).items())


@dataclass
class PayloadRun:
    """Echoes of one payload size."""

    size: int
    calls: int
    in_flight: int
    seconds: float

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds

    @property
    def megabytes_per_second(self) -> float:
        return self.size * self.calls / self.seconds / 1e6


@dataclass
class NoopRun:
    """Sequential no-op calls (latency), then a burst of concurrent ones."""

    latencies: list[float]
    burst_calls: int
    burst_seconds: float

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)

    @property
    def sequential_rate(self) -> float:
        return len(self.latencies) / sum(self.latencies)

    @property
    def burst_rate(self) -> float:
        return self.burst_calls / self.burst_seconds


@dataclass
class MapRun:
    """The factors' sleeps through ``map`` (one stream each), then no-ops."""

    parallel: list[ParallelRun]
    noop_calls: int
    noop_seconds: float

    @property
    def noop_rate(self) -> float:
        return self.noop_calls / self.noop_seconds


@dataclass
class Report:
    """Everything measured against one gateway."""

    server: str
    transport: str
    workers: int
    gateway_workers: list[int] = field(default_factory=list)  # each gateway's workers
    parallel: list[ParallelRun] = field(default_factory=list)
    payload: list[PayloadRun] = field(default_factory=list)
    noop: NoopRun | None = None
    map: MapRun | None = None


def fifo_makespan(durations: list[float], workers: int) -> float:
    """List scheduling with zero overhead: each job, in submission order, starts
    on the worker that frees up first. Returns when the last job ends."""
    free_at = [0.0] * workers
    end = 0.0
    for duration in durations:
        finish = heapq.heappop(free_at) + duration
        end = max(end, finish)
        heapq.heappush(free_at, finish)
    return end


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))]
