"""Generated gRPC stubs for ``proto/mysticchallenge/v1/gateway.proto``.

Do not edit the ``gateway_pb2*`` files: regenerate them with
``python tools/gen_stubs.py`` (a test checks that they match ``proto/``).
"""
