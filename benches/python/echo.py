"""End-to-end echo through the Python client, on both transports, against a
bare tonic echo server measured in the same run.

    cargo build --release --example echo_server && cargo build --release
    .venv/bin/python benches/python/echo.py            # all sizes, 1 KiB .. 256 MiB
    .venv/bin/python benches/python/echo.py --quick    # up to 16 MiB

For each payload size: the median time of one `echo(data).run()` call per
transport, the bare gRPC echo of the same bytes (no workers, no pickling),
and the ratios the shared-memory transport is judged by. Then the latency of
1 KiB calls (p50 and p99 of sequential calls after a warm-up).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import grpc
from _servers import GRPCIO_OPTIONS, echo_server, gateway

from distribute_challenge import compute_this
from distribute_challenge._pb import gateway_pb2, gateway_pb2_grpc

SIZES = [1 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20, 256 << 20]


def echo(data):
    return data


def repeats(size: int) -> int:
    return 30 if size <= 1 << 20 else 7 if size <= 64 << 20 else 3


def median_seconds(call, size: int) -> float:
    call()  # warm-up: connections, first-touch page faults
    samples = []
    for _ in range(repeats(size)):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def latency(call, count: int) -> tuple[float, float]:
    for _ in range(100):
        call()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def measure_gateway(transport: str, sizes: list[int], data: bytes, calls: int) -> dict:
    with gateway(transport, 1) as url:
        remote = compute_this(server=url)(echo)
        results = {}
        for size in sizes:
            payload = data[:size]
            results[size] = median_seconds(lambda p=payload: remote(p).run(), size)
        results["latency"] = latency(lambda: remote(data[:1024]).run(), calls)
    return results


def measure_bare(sizes: list[int], data: bytes, calls: int) -> dict:
    with echo_server() as url:
        channel = grpc.insecure_channel(url.removeprefix("grpc://"), options=GRPCIO_OPTIONS)
        stub = gateway_pb2_grpc.GatewayStub(channel)
        results = {}
        for size in sizes:
            request = gateway_pb2.ExecuteRequest(payload=data[:size])
            results[size] = median_seconds(lambda r=request: stub.Execute(r), size)
        one_kib = gateway_pb2.ExecuteRequest(payload=data[:1024])
        results["latency"] = latency(lambda: stub.Execute(one_kib), calls)
        channel.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 16 MiB only")
    parser.add_argument("--calls", type=int, default=2000, help="1 KiB calls for latency")
    options = parser.parse_args()
    sizes = [size for size in SIZES if not options.quick or size <= 16 << 20]
    data = os.urandom(max(sizes))

    bare = measure_bare(sizes, data, options.calls)
    pipe = measure_gateway("pipe", sizes, data, options.calls)
    shm = measure_gateway("shm", sizes, data, options.calls)

    print("| payload | bare gRPC echo | pipe | shm | pipe / shm | shm / bare |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        label = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
        cells = [f"{r[size] * 1000:.2f} ms" for r in (bare, pipe, shm)]
        ratios = [f"{pipe[size] / shm[size]:.2f}x", f"{shm[size] / bare[size]:.2f}x"]
        print(f"| {label} | " + " | ".join(cells + ratios) + " |")
    print()
    print(f"1 KiB latency over {options.calls} sequential calls (p50 / p99):")
    for name, results in (("bare gRPC echo", bare), ("pipe", pipe), ("shm", shm)):
        p50, p99 = results["latency"]
        print(f"  {name:>15}: {p50 * 1e6:8.0f} us / {p99 * 1e6:8.0f} us")


if __name__ == "__main__":
    main()
