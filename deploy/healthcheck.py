"""Container health check: asks a gateway's ``grpc.health.v1.Health`` service
and exits 0 when it answers SERVING, 1 otherwise (with the reason on stderr).

    python healthcheck.py [HOST:PORT] [--ca-file CA.pem] [--timeout SECS]

``--ca-file`` switches to TLS (the gateway's ``--tls-cert``), trusting that
CA. The health service needs no token.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address", nargs="?", default="127.0.0.1:8000")
    parser.add_argument("--ca-file", help="TLS, trusting this PEM CA")
    parser.add_argument("--timeout", type=float, default=4.0)
    options = parser.parse_args()
    if options.ca_file:
        with open(options.ca_file, "rb") as file:
            credentials = grpc.ssl_channel_credentials(root_certificates=file.read())
        channel = grpc.secure_channel(options.address, credentials)
    else:
        channel = grpc.insecure_channel(options.address)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=options.timeout
            )
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        print(f"unhealthy: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
