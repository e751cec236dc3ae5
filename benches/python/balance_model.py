"""A discrete-event model of how calls spread over several gateways, to
choose a balancing policy before building it; not a measurement.

    python benches/python/balance_model.py              # 200 draws per factor
    python benches/python/balance_model.py --draws 1000

The original load test's bursts (21 workers' worth of calls per factor, each
``random.random()`` seconds long, all at t=0) on one gateway of 21 workers
or three of 7, with zero overhead. Calls go to gateways in round-robin order
(gRPC's ``round_robin``); each gateway runs its calls FIFO on its workers.
Policies:

- ``rr``: unbounded queues (the gateway today);
- ``Q=n``: a gateway refuses a call when n already wait (``--queue-capacity``);
  the client sends it on to the other gateways at once, then backs off
  (``_retry.py``: 10 ms doubling to 1 s, jitter);
- ``T=s``: a call that waits s seconds without a worker is refused
  (the proposed ``--max-queue-wait``) and sent on at once, every time.

Printed per policy and factor: the median and 10th percentile of the
efficiency against the ideal FIFO makespan of all workers together
(``test_load.py``'s figure), and the median number of refusals.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import statistics

WORKERS = 21
FACTORS = (1, 2, 5, 10)
POLICIES = {
    "1x21 rr": {"gateways": 1},
    "3x7 rr": {"gateways": 3},
    "3x7 Q=1": {"gateways": 3, "capacity": 1},
    "3x7 Q=3": {"gateways": 3, "capacity": 3},
    "3x7 Q=7": {"gateways": 3, "capacity": 7},
    "3x7 T=50ms": {"gateways": 3, "max_wait": 0.05},
    "3x7 T=100ms": {"gateways": 3, "max_wait": 0.1},
}
RETRY_RTT = 0.0005  # a refusal and the next attempt, on loopback


def ideal_fifo(durations: list[float], workers: int) -> float:
    free = [0.0] * workers
    for duration in durations:
        heapq.heappush(free, heapq.heappop(free) + duration)
    return max(free)


def makespan(durations, gateways, capacity=None, max_wait=None, rng=random):
    """(when the last call ends, refusals) under one policy."""
    workers = WORKERS // gateways
    events: list = []
    order = itertools.count()
    pick = itertools.count()
    free = [workers] * gateways
    queues: list[list] = [[] for _ in range(gateways)]
    waiting: dict[int, object] = {}  # call -> token of its current wait
    backoff: dict[int, list] = {}  # call -> [next delay, immediate retries left]
    end, refusals = 0.0, 0

    def at(time, kind, data):
        heapq.heappush(events, (time, next(order), kind, data))

    def refuse(time, call, paced):
        nonlocal refusals
        refusals += 1
        state = backoff.setdefault(call, [0.01, gateways - 1])
        if paced or state[1] > 0:
            state[1] = max(state[1] - 1, 0)
            at(time + RETRY_RTT, "arrive", call)
        else:
            at(time + rng.uniform(state[0] / 2, state[0]), "arrive", call)
            state[0] = min(state[0] * 2, 1.0)

    for call in range(len(durations)):
        at(0.0, "arrive", call)
    while events:
        time, _, kind, data = heapq.heappop(events)
        if kind == "arrive":
            gateway = next(pick) % gateways
            if free[gateway]:
                free[gateway] -= 1
                at(time + durations[data], "done", gateway)
            elif capacity is not None and len(queues[gateway]) >= capacity:
                refuse(time, data, paced=False)
            else:
                token = waiting[data] = object()
                queues[gateway].append((data, token))
                if max_wait is not None:
                    at(time + max_wait, "expire", (gateway, data, token))
        elif kind == "done":
            end = max(end, time)
            if queues[data]:
                call, _ = queues[data].pop(0)
                del waiting[call]
                at(time + durations[call], "done", data)
            else:
                free[data] += 1
        else:  # expire
            gateway, call, token = data
            if waiting.get(call) is token:
                queues[gateway] = [entry for entry in queues[gateway] if entry[1] is not token]
                del waiting[call]
                refuse(time, call, paced=True)
    return end, refusals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    rng = random.Random(options.seed)
    for name, policy in POLICIES.items():
        cells = []
        for factor in FACTORS:
            efficiencies, refused = [], []
            for _ in range(options.draws):
                durations = [rng.random() for _ in range(WORKERS * factor)]
                end, refusals = makespan(durations, rng=rng, **policy)
                efficiencies.append(ideal_fifo(durations, WORKERS) / end * 100)
                refused.append(refusals)
            efficiencies.sort()
            cells.append(
                f"f{factor} {statistics.median(efficiencies):6.2f}%"
                f" p10 {efficiencies[len(efficiencies) // 10]:6.2f}%"
                f" refused {statistics.median(refused):6.0f}"
            )
        print(f"{name:<12} " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
