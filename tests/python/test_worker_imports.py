"""The worker depends on the payload format, not on the client: neither a
running worker nor the worker's modules load grpc, protobuf, asyncio or
``distribute_challenge``. Each of these tests fails if the worker imports the
client package again (it used to, for the codec). The payload format takes
its records from the extension ``mystic_native``, which must not load the
client either."""

from __future__ import annotations

import json
import subprocess
import sys

from distribute_challenge import compute_this

CLIENT_ROOTS = ("asyncio", "distribute_challenge", "google", "grpc")


def client_modules() -> list[str]:
    """The client's modules loaded in this process, by top-level name."""
    return sorted(name for name in sys.modules if name.split(".")[0] in CLIENT_ROOTS)


def test_a_running_worker_has_not_loaded_the_client(start_gateway):
    # A fresh gateway: the shared one's workers may have imported asyncio or
    # the client for an earlier test's function.
    gateway = start_gateway("--workers", "1")
    assert compute_this(server=gateway.url)(client_modules)().run() == []


def _all_loaded_by(statement: str) -> list[str]:
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    finished = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(finished.stdout)


def _loaded_by(statement: str) -> list[str]:
    """The client's modules that ``statement`` loads."""
    loaded = _all_loaded_by(statement)
    return [name for name in loaded if name.split(".")[0] in CLIENT_ROOTS]


def test_the_executor_imports_no_client_module():
    assert _loaded_by("import worker_shim._executor") == []


def test_the_whole_worker_imports_no_client_module():
    statement = "import worker_shim.__main__, worker_shim._loop, worker_shim._template"
    assert _loaded_by(statement) == []


def test_the_payload_format_imports_no_client_module():
    assert _loaded_by("import mystic_wire") == []


def test_the_native_core_imports_no_client_module():
    assert _loaded_by("import mystic_native") == []


def test_the_payload_format_takes_its_records_from_the_extension():
    assert "mystic_native._native" in _all_loaded_by("import mystic_wire")


def test_the_check_sees_the_client_when_it_is_loaded():
    assert "distribute_challenge" in _loaded_by("import distribute_challenge")
