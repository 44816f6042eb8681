"""Regenerate the Python code of protos/flashtx/v1/*.proto, in the client package
(clients/python: flashtx-client, which the engine depends on and imports too).

    python scripts/gen_protos.py            # rewrite clients/python/src/flashtx_client/v1/
    python scripts/gen_protos.py --check    # exit 1 if the committed code has drifted

protoc writes the messages (``*_pb2.py``) and the gRPC stubs (``*_pb2_grpc.py``);
mypy-protobuf their types (``*.pyi``, typed async stubs included). Two rewrites follow:

- the modules import each other as ``flashtx.v1.x_pb2``; they live in the package
  ``flashtx_client.v1``, so those imports name it;
- the stubs refuse to import under a grpcio older than the grpcio-tools that generated
  them. The code they hold (``channel.unary_unary(..., _registered_method=True)``) runs on
  every grpcio the client supports, so the floor they check is the client's own
  (``GRPC_MINIMUM``, the lower bound of its grpcio requirement: a test keeps the two
  equal), so that an application may keep its own grpcio within that range.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import sysconfig
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PROTO_DIR = PROTO_ROOT / "flashtx" / "v1"
OUT_DIR = ROOT / "clients" / "python" / "src" / "flashtx_client" / "v1"
GRPC_MINIMUM = "1.82.0"
_IMPORT = re.compile(r"^from flashtx\.v1 import", re.MULTILINE)
_GRPC_VERSION = re.compile(r"^GRPC_GENERATED_VERSION = '[0-9.]+'$", re.MULTILINE)


def generate(out_root: Path) -> dict[str, str]:
    """Runs protoc into out_root and returns {file name: text} of what it generated."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_DIR.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    plugins = Path(sysconfig.get_path("scripts"))  # protoc-gen-mypy, protoc-gen-mypy_grpc
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={plugins / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugins / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    saved = os.dup(2)  # the plugins (processes of their own) name every file they write
    with open(os.devnull, "w") as quiet:
        os.dup2(quiet.fileno(), 2)
        try:
            failed = protoc.main(args) != 0
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    if failed:
        raise SystemExit("protoc failed")
    generated = {}
    for path in sorted((out_root / "flashtx" / "v1").glob("*_pb2*.py*")):
        text = _IMPORT.sub("from flashtx_client.v1 import", path.read_text())
        generated[path.name] = _GRPC_VERSION.sub(f"GRPC_GENERATED_VERSION = '{GRPC_MINIMUM}'",
                                                 text)
    return generated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail on drift, write nothing")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
    committed = {p.name: p.read_text() for p in OUT_DIR.glob("*_pb2*.py*")}
    if options.check:
        if generated != committed:
            drifted = sorted(set(generated) ^ set(committed)) or sorted(
                name for name in generated if generated[name] != committed.get(name)
            )
            print(f"generated code drifted: {', '.join(drifted)}", file=sys.stderr)
            return 1
        return 0
    for name in set(committed) - set(generated):
        (OUT_DIR / name).unlink()
    for name, text in generated.items():
        (OUT_DIR / name).write_text(text)
    print(f"wrote {len(generated)} files to {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
