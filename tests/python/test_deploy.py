"""The deployment files in ``deploy/``, checked offline (no Docker engine or
cluster here): the Kubernetes manifests against the Kubernetes schemas
(kubernetes-validate, strict), the compose file against the Compose
specification (check-jsonschema's vendored schema), the Dockerfile with
hadolint; then what no schema knows: the files agree with each other and
with the gateway (ports, token path, workers and CPUs, grace periods, what
the image build copies), and the image's health check speaks
``grpc.health.v1`` to a real gateway."""

from __future__ import annotations

import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tomllib

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
DOCKERFILE = DEPLOY / "Dockerfile"
BIN = pathlib.Path(sys.executable).parent


def run(*command: str | pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=120, check=False
    )


def tool(name: str) -> pathlib.Path:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"{name} is missing: pip install -e '.[test]' (make venv does)")
        path = pathlib.Path(found)
    return path


def resources() -> dict[str, dict]:
    """Every manifest's resource, by kind."""
    loaded = {}
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text()):
            loaded[document["kind"]] = document
    return loaded


def flag(args: list[str], name: str) -> str:
    """The value of ``--name=VALUE`` or ``--name VALUE`` in ``args``."""
    for i, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name:
            return args[i + 1]
    raise AssertionError(f"{name} is not among {args}")


def dockerfile_json(instruction: str) -> list[str]:
    match = re.search(rf"^{instruction} (\[.*\])$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"no exec-form {instruction} in {DOCKERFILE}"
    return yaml.safe_load(match.group(1))


def test_the_kubernetes_manifests_match_the_schemas():
    assert {path.name for path in MANIFESTS} >= {"deployment.yaml", "service.yaml"}
    result = run(sys.executable, "-m", "kubernetes_validate", "--strict", *MANIFESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_file_matches_the_compose_specification():
    result = run(
        tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", DEPLOY / "compose.yaml"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_finds_nothing_in_the_dockerfile():
    result = run(tool("hadolint"), DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_deployment_agrees_with_the_gateway_and_the_service():
    found = resources()
    deployment, service = found["Deployment"], found["Service"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}

    # The image listens on 8000 (gRPC) and 9100 (metrics); the pod says so.
    entrypoint = dockerfile_json("ENTRYPOINT")
    assert flag(entrypoint, "--listen") == f"0.0.0.0:{ports['grpc']}"
    assert flag(entrypoint, "--metrics-listen") == f"0.0.0.0:{ports['metrics']}"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    assert annotations["prometheus.io/path"] == "/metrics"

    # Every probe is the gRPC health service on the gRPC port.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"], probe

    # One CPU per worker, requested and capped.
    workers = int(flag(args, "--workers"))
    assert container["resources"]["requests"]["cpu"] == str(workers)
    assert container["resources"]["limits"]["cpu"] == str(workers)

    # The token comes from a Secret, mounted where --auth-token-file looks.
    token = pathlib.PurePosixPath(flag(args, "--auth-token-file"))
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    mount = mounts[str(token.parent)]
    secret = volumes[mount["name"]]["secret"]
    assert [item["path"] for item in secret["items"]] == [token.name]

    # Running calls get their grace before the kubelet kills the pod.
    grace = int(flag(args, "--shutdown-grace"))
    assert pod["spec"]["terminationGracePeriodSeconds"] > grace

    # Headless, over the gateway pods' gRPC port: clients balance per call.
    assert service["spec"]["clusterIP"] == "None"
    labels = pod["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in ("grpc", ports["grpc"])


def test_the_compose_gateways_keep_a_token_and_their_grace():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert len(compose["services"]) == 3
    for name, service in compose["services"].items():
        assert "--auth-token-file" in service["command"], name
        assert flag(service["command"], "--auth-token-file") == "/run/secrets/token"
        assert "token" in service["secrets"]
        assert all(port.startswith("127.0.0.1:") for port in service["ports"]), name


def test_the_image_build_copies_every_python_package_and_the_crate():
    dockerfile = DOCKERFILE.read_text()
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.MULTILINE))
    sources = {source for line in copied for source in line.split()}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {name.split(".")[0] for name in pyproject["tool"]["setuptools"]["packages"]}
    crates = {
        str(pathlib.Path(extension["path"]).parent)
        for extension in pyproject["tool"]["setuptools-rust"]["ext-modules"]
    }
    needed = {"Cargo.toml", "Cargo.lock", "build.rs", "pyproject.toml", "src", "proto"}
    needed |= packages | crates
    assert needed <= sources, needed - sources
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:] for line in ignore if line.startswith("!")}
    assert sources - {"./"} <= kept | {"deploy/healthcheck.py"}, sources - kept


def test_the_health_check_says_serving_or_why_not(start_gateway):
    gateway = start_gateway()
    address = gateway.url.removeprefix("grpc://")
    assert run(sys.executable, DEPLOY / "healthcheck.py", address).returncode == 0
    gateway.stop()
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        free = f"127.0.0.1:{probe.getsockname()[1]}"
    result = run(sys.executable, DEPLOY / "healthcheck.py", free, "--timeout", "2")
    assert result.returncode == 1 and "unhealthy" in result.stderr
