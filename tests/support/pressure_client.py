"""One client process of the memory-pressure test: THREADS threads each send
CALLS echo calls of SIZE bytes to URL at once (no retries of queue-full), and
one call over the payload limit; prints how each call ended as JSON.

Usage: python pressure_client.py URL THREADS CALLS SIZE OVERSIZE
"""

import json
import sys
import threading
from collections import Counter

from distribute_challenge import PayloadTooLarge, ServerBusy, compute_this


def echo(data):
    return data


def main() -> None:
    url, threads, calls, size, oversize = sys.argv[1:]
    remote = compute_this(server=url, busy_timeout=0)(echo)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def count(what: str) -> None:
        with lock:
            outcomes[what] += 1

    def send(length: int) -> None:
        data = bytes(length)
        try:
            result = remote(data).run()
            count("ok" if result == data else "wrong-result")
        except ServerBusy as exc:
            # Which bound refused it: bytes being received, or the queue.
            count("busy-receiving" if "--max-receiving-bytes" in str(exc) else "busy-queue")
        except PayloadTooLarge:
            count("too-large")
        except Exception as exc:  # anything else is a lost call
            count(f"other: {type(exc).__name__}: {exc}"[:200])

    def worker() -> None:
        for _ in range(int(calls)):
            send(int(size))

    running = [threading.Thread(target=worker) for _ in range(int(threads))]
    running.append(threading.Thread(target=send, args=(int(oversize),)))
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    print(json.dumps(outcomes))


if __name__ == "__main__":
    main()
