"""Generated gRPC stubs for ``proto/mysticchallenge/v1/gateway.proto``.

For callers who speak to a gateway with grpcio rather than through
``compute_this`` (they need the ``grpc`` extra: grpcio and protobuf); the
client does not import them.

Do not edit the ``gateway_pb2*`` files: regenerate them with
``python tools/gen_stubs.py`` (a test checks that they match ``proto/``).
"""
