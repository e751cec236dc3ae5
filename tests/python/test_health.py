"""Health tells the truth, on both transports: ``grpc.health.v1`` reports
NOT_SERVING while no worker can take a call (every one of them restarting or
failing to start, whether started directly or waiting for a stopped
template), and SERVING again once one can."""

from __future__ import annotations

import os
import shutil
import signal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from system_state import wait_until

from distribute_challenge import compute_this

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health(gateway) -> int:
    with grpc.insecure_channel(gateway.url.removeprefix("grpc://")) as channel:
        request = health_pb2.HealthCheckRequest(service="")
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


def test_health_is_not_serving_while_no_worker_can_take_a_call(start_gateway):
    gateway = start_gateway("--no-template")
    assert health(gateway) == SERVING
    # Workers run `python -m worker_shim` in the gateway's directory, and -m
    # looks there first: a package of that name there breaks every restart.
    broken = gateway.workdir / "worker_shim"
    broken.mkdir()
    (broken / "__init__.py").write_text("")
    (broken / "__main__.py").write_text("raise SystemExit('broken on purpose by the test')\n")
    for pid in gateway.worker_pids():
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: health(gateway) == NOT_SERVING, "health to say NOT_SERVING", 20)

    shutil.rmtree(broken)
    wait_until(lambda: health(gateway) == SERVING, "health to say SERVING again", 30)
    assert compute_this(server=gateway.url)(abs)(-2).run() == 2


def test_health_is_not_serving_while_the_template_cannot_fork(start_gateway):
    from test_template import template_of

    gateway = start_gateway()
    template = template_of(gateway)
    os.kill(template, signal.SIGSTOP)
    try:
        for pid in gateway.worker_pids():
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: health(gateway) == NOT_SERVING, "health to say NOT_SERVING", 20)
    finally:
        os.kill(template, signal.SIGCONT)
    wait_until(lambda: health(gateway) == SERVING, "health to say SERVING again", 30)
    assert compute_this(server=gateway.url)(abs)(-2).run() == 2
