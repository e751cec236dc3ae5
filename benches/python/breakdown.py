"""Where the microseconds of one no-op call go, measured in one run.

    cargo build --release && cargo build --release --example echo_server
    .venv/bin/python benches/python/breakdown.py             # both transports
    .venv/bin/python benches/python/breakdown.py --calls 500 --rounds 3   # quicker

The function is a no-op defined in this script (``__main__``), as users write
them. The parts, each measured on its own in the same run:

- client: building the request (``Call._prepare``: capture, arguments,
  target, metadata) and handling the response (``_outcome.finish``), in process;
- gRPC hop: a sequential ``Execute`` of a payload of the no-op request's
  size against the bare tonic echo server, from the same client (the client's
  gRPC stack, loopback TCP, HTTP/2 on both ends);
- worker: ``worker_shim._executor.execute`` of the no-op request, in process;
- worker leg: the gateway's own measure of the call on the worker
  (``mystic_call_duration_seconds``: from the worker actor sending the request
  to its response, the worker's time included; its mean) minus the worker;
- gateway: what is left of the end-to-end p50: receiving and decoding the
  call, the queue, the actor, and sending the response back.

Rounds interleave the transports (and the echo server) in short blocks.
Medians of sequential calls; the gateway part is a difference of medians
and a mean, so it is an estimate.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import timeit
import urllib.request

from _servers import echo_server, serving
from harness import timed as sequential

import mystic_wire
from distribute_challenge import _outcome, compute_this
from distribute_challenge._pb import gateway_pb2, gateway_pb2_grpc


def noop():
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def in_process_microseconds(function, number: int = 20_000) -> float:
    function()
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def client_microseconds(remote) -> tuple[float, int]:
    call = remote()
    prepare = in_process_microseconds(call._prepare)
    prepared = call._prepare()
    request = prepared.request(False) if callable(prepared.request) else prepared.request
    response = mystic_wire.encode_response(mystic_wire.OK, None, "", "")
    finish = in_process_microseconds(lambda: _outcome.finish(response))
    return prepare + finish, len(request)


def worker_microseconds() -> float:
    from worker_shim import _executor

    if hasattr(mystic_wire, "encode_call"):
        # The worker holds the function: calls come by digest.
        function = mystic_wire.encode_function(noop)
        call = mystic_wire.encode_call(function.digest, (), {}, ())
        _executor.execute(memoryview(mystic_wire.attach(function, call)))
    else:
        call = mystic_wire.encode_request(noop, (), {}, ())
    return in_process_microseconds(lambda: _executor.execute(memoryview(call)), 5_000)


def call_duration_mean(port: int) -> float:
    """Mean of the gateway's histogram of calls on workers, in seconds."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        for name in ("mystic_call_duration_seconds_sum", "mystic_call_duration_seconds_count"):
            if line.startswith(name + " ") or line.startswith(name + "{"):
                values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return values["mystic_call_duration_seconds_sum"] / values["mystic_call_duration_seconds_count"]


def gateway_command(binary: str, transport: str, port: int, flags: list[str]) -> list[str]:
    return [
        binary,
        "--listen",
        "127.0.0.1:0",
        "--transport",
        transport,
        "--workers",
        "1",
        "--python",
        sys.executable,
        "--metrics-listen",
        f"127.0.0.1:{port}",
        *flags,
    ]


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(mystic_wire.__file__),
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="sequential calls per block")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--gateway",
        default=os.environ.get("MYSTIC_GATEWAY_BIN", "target/release/mysticchallenge"),
    )
    parser.add_argument(
        "--gateway-flags", default="", help="extra gateway flags, e.g. '--runtime-threads 2'"
    )
    args = parser.parse_args()

    worker = worker_microseconds()
    with echo_server() as echo_url:
        import grpc
        from _servers import GRPCIO_OPTIONS

        channel = grpc.insecure_channel(echo_url.removeprefix("grpc://"), options=GRPCIO_OPTIONS)
        echo = gateway_pb2_grpc.GatewayStub(channel)
        gateways = {}
        contexts = []
        for transport in ("pipe", "shm"):
            port = free_port()
            command = gateway_command(args.gateway, transport, port, args.gateway_flags.split())
            context = serving(command)
            contexts.append(context)
            url = context.__enter__()
            remote = compute_this(server=url)(noop)
            gateways[transport] = (remote, port)
        try:
            client, request_bytes = client_microseconds(gateways["pipe"][0])
            hop_request = gateway_pb2.ExecuteRequest(payload=os.urandom(request_bytes))
            samples = {"echo": [], "pipe": [], "shm": []}
            for remote, _ in gateways.values():
                sequential(lambda remote=remote: remote().run(), 200)
            sequential(lambda: echo.Execute(hop_request), 200)
            for _ in range(args.rounds):
                samples["echo"] += sequential(lambda: echo.Execute(hop_request), args.calls)
                for transport, (remote, _) in gateways.items():
                    samples[transport] += sequential(lambda r=remote: r().run(), args.calls)
            durations = {t: call_duration_mean(port) for t, (_, port) in gateways.items()}
        finally:
            for context in reversed(contexts):
                context.__exit__(None, None, None)

    hop = statistics.median(samples["echo"]) * 1e6
    print(f"commit {git_commit()}; {os.cpu_count()} cores; python {sys.version.split()[0]}")
    print(f"command: {' '.join(sys.argv)}; no-op request {request_bytes} bytes\n")
    print("| part | pipe | shm |")
    print("|---|---:|---:|")
    rows = {}
    for transport in ("pipe", "shm"):
        total = statistics.median(samples[transport]) * 1e6
        leg = durations[transport] * 1e6 - worker
        gateway = total - hop - client - leg - worker
        rows[transport] = {
            "client (request and response, in process)": client,
            "gRPC hop (bare echo, same client)": hop,
            "gateway (decode, queue, actor, respond)": gateway,
            "worker leg (transport both ways)": leg,
            "worker (execute, in process)": worker,
            "**end to end, p50**": total,
        }
    for part in rows["pipe"]:
        print(f"| {part} | {rows['pipe'][part]:.0f} µs | {rows['shm'][part]:.0f} µs |")


if __name__ == "__main__":
    main()
