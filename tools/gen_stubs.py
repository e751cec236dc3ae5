"""Generates the client's gRPC stubs from ``proto/`` into ``distribute_challenge/_pb/``.

Usage: ``python tools/gen_stubs.py [OUT_DIR]`` (default: ``distribute_challenge/_pb``).

It runs the pinned grpcio-tools (the ``test`` extra of ``pyproject.toml``) and
rewrites the one import protoc writes for the proto's own package
(``from mysticchallenge.v1 import gateway_pb2``) into an import from inside
``distribute_challenge._pb``. The descriptor keeps its proto path
(``mysticchallenge/v1/gateway.proto``). ``tests/python/test_stubs.py`` runs
this into a temporary directory and compares with the committed files.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "proto"
PROTO = "mysticchallenge/v1/gateway.proto"
DEFAULT_OUT = REPO / "distribute_challenge" / "_pb"
GRPCIO_TOOLS_VERSION = "1.85.1"
GENERATED = ("gateway_pb2.py", "gateway_pb2.pyi", "gateway_pb2_grpc.py")

_PROTOC_IMPORT = "from mysticchallenge.v1 import gateway_pb2 as "
_PACKAGE_IMPORT = "from distribute_challenge._pb import gateway_pb2 as "


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Writes the generated files into ``out_dir``; returns their paths."""
    installed = importlib.metadata.version("grpcio-tools")
    if installed != GRPCIO_TOOLS_VERSION:
        raise SystemExit(
            f"grpcio-tools {installed} is installed, but the stubs are generated with "
            f"{GRPCIO_TOOLS_VERSION}: run `pip install -e '.[test]'`"
        )
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as scratch:
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"--python_out={scratch}",
                f"--pyi_out={scratch}",
                f"--grpc_python_out={scratch}",
                str(PROTO_ROOT / PROTO),
            ]
        )
        if status != 0:
            raise SystemExit(f"protoc failed with status {status}")
        generated = pathlib.Path(scratch) / pathlib.Path(PROTO).parent
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in GENERATED:
            text = (generated / name).read_text()
            if name == "gateway_pb2_grpc.py":
                if text.count(_PROTOC_IMPORT) != 1:
                    raise SystemExit(f"unexpected imports in the generated {name}")
                text = text.replace(_PROTOC_IMPORT, _PACKAGE_IMPORT)
            target = out_dir / name
            target.write_text(text)
            written.append(target)
    return written


def main(argv: list[str]) -> int:
    out_dir = pathlib.Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    for path in generate(out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
