"""Monitoring: the gateway's `/metrics` (`--metrics-listen`) and the files in
`monitoring/` that read it.

- The Grafana dashboard is valid dashboard JSON whose every panel queries
  Prometheus, and it covers throughput, latency, per-worker allocation, queue,
  restarts, transport bytes and refusals.
- The Prometheus config scrapes `/metrics` at the address the README uses.
- On each transport, a gateway's `/metrics` parses as the exposition format it
  announces, has one series per worker, counts exactly the calls made
  (per worker, per outcome, as `GetWorkers` reports them), and has every
  series the dashboard queries.
- With `promtool` installed (not required), every panel query parses as
  PromQL and the Prometheus config passes `promtool check config`.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import grpc
import pytest
from gateway_process import REPO
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus_text

from distribute_challenge import CallTimeout, PayloadTooLarge, WorkerCrashed, compute_this
from distribute_challenge._pb import gateway_pb2

MONITORING = REPO / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"

METRIC_NAME = re.compile(r"\bmystic_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# What the dashboard must show, by the series it reads.
REQUIRED_SERIES = {
    "mystic_calls_total",
    "mystic_call_duration_seconds_bucket",
    "mystic_queue_depth",
    "mystic_busy_workers",
    "mystic_worker_restarts_total",
    "mystic_transport_bytes_total",
    "mystic_rejected_calls_total",
}
# Grafana's variables, replaced by values Prometheus accepts.
GRAFANA_VARIABLES = {"$__rate_interval": "20s", "$__range": "15m", "$instance": ".*"}


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict) -> list[dict]:
    """Every panel, including those nested in collapsed rows."""
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return [panel for panel in panels if panel.get("type") != "row"]


def panel_queries(dashboard: dict) -> list[str]:
    """The PromQL of every panel target."""
    return [target["expr"] for panel in all_panels(dashboard) for target in panel["targets"]]


def dashboard_queries(dashboard: dict) -> list[str]:
    """The panels' queries and the query variables' (Grafana's `label_values(...)`)."""
    queries = panel_queries(dashboard)
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def series_used(queries: list[str]) -> set[str]:
    return {name for query in queries for name in METRIC_NAME.findall(query)}


def family_of(series: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if series.endswith(suffix):
            return series.removesuffix(suffix)
    return series


# The dashboard and the Prometheus config, without a gateway.


def test_dashboard_is_grafana_dashboard_json():
    dashboard = load_dashboard()
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["title"] and dashboard["uid"]
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"

    panels = all_panels(dashboard)
    assert panels, "the dashboard has no panels"
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    for panel in panels:
        where = f"panel {panel['title']!r}"
        assert panel["type"] in {"timeseries", "stat", "bargauge", "gauge"}, where
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, where
        assert panel["datasource"]["uid"] == "${datasource}", where
        assert panel["targets"], f"{where} has no queries"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{where} has an empty query"
            assert METRIC_NAME.search(target["expr"]), f"{where} reads no mystic_ metric"


def test_dashboard_shows_throughput_latency_workers_queue_restarts_bytes_refusals():
    dashboard = load_dashboard()
    used = series_used(dashboard_queries(dashboard))
    assert REQUIRED_SERIES <= used, f"not on the dashboard: {sorted(REQUIRED_SERIES - used)}"
    queries = dashboard_queries(dashboard)
    assert any("histogram_quantile(0.99" in query for query in queries)
    assert any("by (worker)" in query for query in queries), "no per-worker allocation"
    assert any(panel["type"] == "bargauge" for panel in all_panels(dashboard))


def test_prometheus_config_scrapes_the_gateway_metrics_path():
    text = PROMETHEUS_CONFIG.read_text()
    try:
        import yaml
    except ImportError:
        assert "metrics_path: /metrics" in text
        assert '"127.0.0.1:9100"' in text
        return
    config = yaml.safe_load(text)
    (job,) = config["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9100"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_dashboard_queries_are_promql_and_config_passes_promtool(tmp_path: pathlib.Path):
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for number, query in enumerate(panel_queries(load_dashboard())):
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        rules += [f"      - record: dashboard_query_{number}", f"        expr: {json.dumps(query)}"]
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text("\n".join(rules) + "\n")
    for command in (
        ["check", "rules", str(rules_file)],
        ["check", "config", str(PROMETHEUS_CONFIG)],
    ):
        checked = subprocess.run(["promtool", *command], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


# A live gateway's /metrics, on each transport.


def square(x):
    return x * x


def rendezvous(directory, parties):
    """Returns once `parties` calls are running at the same time, so on as many workers."""
    path = pathlib.Path(directory)
    (path / str(os.getpid())).touch()
    deadline = time.monotonic() + 30
    while len(list(path.iterdir())) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError("the other calls never ran at the same time")
        time.sleep(0.005)
    return os.getpid()


def crash():
    os._exit(3)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Scrape:
    """One fetch of `/metrics`, parsed by the parser its Content-Type names."""

    def __init__(self, port: int) -> None:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            self.content_type = response.headers.get("Content-Type", "")
            self.text = response.read().decode()
        if self.content_type.startswith("application/openmetrics-text"):
            parse = parse_openmetrics
        else:
            assert self.content_type.startswith("text/plain"), self.content_type
            parse = parse_prometheus_text
        self.families = list(parse(self.text))
        self.samples = [sample for family in self.families for sample in family.samples]

    def series(self, name: str) -> list:
        return [sample for sample in self.samples if sample.name == name]

    def value(self, name: str, **labels: str) -> float:
        return sum(
            sample.value
            for sample in self.series(name)
            if all(sample.labels.get(key) == value for key, value in labels.items())
        )


def test_metrics_endpoint_counts_every_call_per_worker(start_gateway, tmp_path):
    port = free_port()
    gateway = start_gateway("--workers", "2", "--metrics-listen", f"127.0.0.1:{port}")
    remote = compute_this(server=gateway.url)

    # One call on each worker at once, then sequential calls, one crash, and
    # one request that is not an encoded call.
    meet = remote(rendezvous)

    async def both_workers():
        return await asyncio.gather(*(meet(str(tmp_path), 2).async_run() for _ in range(2)))

    assert len(set(asyncio.run(both_workers()))) == 2
    for n in range(10):
        assert remote(square)(n).run() == n * n
    ok_calls = 12
    with pytest.raises(WorkerCrashed):
        remote(crash)().run()
    with pytest.raises(grpc.RpcError) as refused:
        gateway.stub().Execute(gateway_pb2.ExecuteRequest(payload=b"not a call"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    gateway.wait_for(lambda g: g.restarts() == 1, "the crashed worker's replacement")

    def settled(_gateway) -> bool:
        scrape = Scrape(port)
        return (
            scrape.value("mystic_worker_restarts_total") == 1
            and scrape.value("mystic_busy_workers") == 0
            and scrape.value("mystic_queue_depth") == 0
        )

    gateway.wait_for(settled, "/metrics to show one restart and no call in flight")
    scrape = Scrape(port)
    info = {worker.index: worker for worker in gateway.info().workers}

    # One series per worker, each counting what that worker served.
    calls = scrape.series("mystic_calls_total")
    assert {sample.labels["worker"] for sample in calls} == {"0", "1"}
    for index, worker in info.items():
        served = scrape.value("mystic_calls_total", worker=str(index), outcome="ok")
        assert served == worker.calls_served > 0, scrape.text
        restarts = scrape.value("mystic_worker_restarts_total", worker=str(index))
        assert restarts == worker.restarts, scrape.text
    assert scrape.value("mystic_calls_total", outcome="ok") == ok_calls
    assert scrape.value("mystic_calls_total", outcome="worker-crashed") == 1
    (crashed,) = [sample for sample in calls if sample.labels["outcome"] == "worker-crashed"]
    assert info[int(crashed.labels["worker"])].restarts == 1

    # Every call that reached a worker was timed, and had waited in the queue.
    reached = scrape.value("mystic_calls_total")
    assert reached == ok_calls + 1
    assert scrape.value("mystic_call_duration_seconds_count") == reached
    assert scrape.value("mystic_queue_wait_seconds_count") == reached
    assert scrape.value("mystic_rejected_calls_total", reason="invalid-request") == 1
    assert scrape.value("mystic_workers") == 2

    # Bytes are counted under this gateway's transport, both ways.
    moved = scrape.series("mystic_transport_bytes_total")
    assert {sample.labels["transport"] for sample in moved} == {gateway.transport}
    for direction in ("request", "response"):
        assert scrape.value("mystic_transport_bytes_total", direction=direction) > 0

    # Every series the dashboard reads is in the scrape.
    names = {sample.name for sample in scrape.samples}
    used = series_used(dashboard_queries(load_dashboard()))
    missing = sorted(series for series in used if series not in names)
    assert not missing, f"the dashboard reads series /metrics lacks: {missing}\n{scrape.text}"
    families = {family.name for family in scrape.families}
    assert {family_of(series) for series in used if series.endswith("_bucket")} <= families


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


def test_each_call_is_counted_once_as_an_outcome_or_as_never_served(start_gateway):
    port = free_port()
    gateway = start_gateway(
        "--workers", "1", "--max-payload-bytes", "100000", "--metrics-listen", f"127.0.0.1:{port}"
    )
    remote = compute_this(server=gateway.url)

    # A response over the limit ran: an outcome, not a refusal.
    with pytest.raises(PayloadTooLarge):
        remote(bytes)(200_000).run()

    # A call that times out while the only worker is busy never ran.
    async def one_waits_too_long():
        busy = asyncio.ensure_future(remote(sleep_then)(2, "slept").async_run())
        await asyncio.sleep(0.5)
        with pytest.raises(CallTimeout):
            await compute_this(server=gateway.url, timeout=0.5)(square)(3).async_run()
        return await busy

    assert asyncio.run(one_waits_too_long()) == "slept"

    def counted(_gateway) -> bool:
        return Scrape(port).value("mystic_rejected_calls_total") >= 1

    gateway.wait_for(counted, "the expired call to be counted when the worker reached it")
    scrape = Scrape(port)
    assert scrape.value("mystic_calls_total", outcome="payload-too-large") == 1, scrape.text
    assert scrape.value("mystic_calls_total", outcome="ok") == 1, scrape.text
    assert scrape.value("mystic_calls_total", outcome="call-timeout") == 0, scrape.text
    rejected = {
        sample.labels["reason"]: sample.value
        for sample in scrape.series("mystic_rejected_calls_total")
        if sample.value
    }
    assert rejected == {"deadline-in-queue": 1}, scrape.text
    # Only the two calls that ran were timed.
    assert scrape.value("mystic_call_duration_seconds_count") == 2, scrape.text
    assert scrape.value("mystic_queue_wait_seconds_count") == 2, scrape.text
