"""The wheel: built from this tree by pip (setuptools-rust), installed into
a fresh virtualenv, it brings the gateway binary on that venv's PATH along
with the Python packages and their native core (``mystic_native``), and
``mysticchallenge`` from it serves calls from that venv.

The wheel reuses the cargo build in ``target/release`` (``make build`` made
it, in the same release profile), so it takes seconds, not a compilation;
without that build the test is skipped. Installing the wheel's dependencies
takes them from pip's cache or PyPI.
"""

from __future__ import annotations

import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import venv

import pytest
from gateway_process import DEFAULT_BINARY

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"

CLIENT = """
from distribute_challenge import compute_this
import distribute_challenge, mystic_native, worker_shim

@compute_this()
def where(x):
    import sys, mystic_native, worker_shim
    return x * x, sys.executable, worker_shim.__file__, mystic_native.__file__

print(distribute_challenge.__file__)
print(worker_shim.__file__)
print(mystic_native.__file__)
print(*where(7).run(), sep="\\n")
print(where.get_workers())
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> pathlib.Path:
    """A fresh venv with the wheel of this tree installed; returns its bin/."""
    if not DEFAULT_BINARY.exists():
        pytest.skip(f"no {DEFAULT_BINARY}: run `make build` first (the wheel reuses that build)")
    wheels = tmp_path_factory.mktemp("wheels")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    built = subprocess.run(
        [
            BIN / "python",
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            wheels,
            ".",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("mysticchallenge-*.whl")
    home = tmp_path_factory.mktemp("fresh-venv")
    venv.EnvBuilder(with_pip=True).create(home)
    install = subprocess.run(
        [home / "bin" / "python", "-m", "pip", "install", "--quiet", wheel],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return home / "bin"


def start(binary: pathlib.Path, path: str, workdir: pathlib.Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--workers", "1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=workdir,
        env={"PATH": path, "HOME": str(workdir)},
    )


def serving(process: subprocess.Popen[str]) -> str:
    """The gateway's URL once it serves, or a failure with its log."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=60).strip()
    except queue.Empty:
        line = ""
    if not line.startswith("serving "):
        process.kill()
        pytest.fail(f"the installed gateway did not start: {line!r}\n{process.stderr.read()}")
    return line.removeprefix("serving ")


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def test_the_wheel_puts_the_gateway_on_the_venv_path(installed):
    binary = installed / "mysticchallenge"
    assert binary.is_file() and os.access(binary, os.X_OK)
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert version.returncode == 0 and version.stdout.startswith("mysticchallenge ")


def test_the_installed_gateway_serves_the_installed_client(installed, tmp_path):
    # The venv's bin/ first on PATH, as when it is activated; run outside the
    # repository, so that nothing is imported from this tree.
    gateway = start(
        installed / "mysticchallenge", f"{installed}{os.pathsep}{SYSTEM_PATH}", tmp_path
    )
    try:
        url = serving(gateway)
        client = subprocess.run(
            [installed / "python", "-c", CLIENT],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={"PATH": SYSTEM_PATH, "DISTRIBUTE_SERVER": url, "HOME": str(tmp_path)},
            check=False,
        )
    finally:
        status = stop(gateway)
    assert client.returncode == 0, client.stderr
    (
        client_module,
        client_shim,
        client_native,
        square,
        worker_python,
        worker_shim,
        worker_native,
        workers,
    ) = client.stdout.splitlines()
    venv_root = installed.parent
    for path in (client_module, client_shim, client_native, worker_shim, worker_native):
        assert pathlib.Path(path).is_relative_to(venv_root), path
    assert square == "49"
    assert pathlib.Path(worker_python).parent == installed
    assert workers == "1"
    assert status == 0


def test_the_installed_gateway_uses_its_own_venv_without_activation(installed, tmp_path):
    gateway = start(installed / "mysticchallenge", SYSTEM_PATH, tmp_path)
    try:
        serving(gateway)
    finally:
        stop(gateway)
