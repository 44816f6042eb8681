"""Regenerate the Python code for protos/flashtx/v1/*.proto.

    python scripts/gen_protos.py            # rewrite protos/flashtx/v1/*_pb2*.py(i)
    python scripts/gen_protos.py --check    # exit 1 if the committed code has drifted

The generated modules import each other as `flashtx.v1.x_pb2`; they live in the
`flashtx.protos` package, so those imports are rewritten to `flashtx.protos.flashtx.v1.x_pb2`.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_DIR = PROTO_ROOT / "flashtx" / "v1"
_IMPORT = re.compile(r"^from flashtx\.v1 import", re.MULTILINE)


def generate(out_root: Path) -> dict[str, str]:
    """Runs protoc into out_root and returns {file name: text} of what it generated."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in OUT_DIR.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated = {}
    for path in sorted((out_root / "flashtx" / "v1").glob("*_pb2*.py*")):
        generated[path.name] = _IMPORT.sub("from flashtx.protos.flashtx.v1 import",
                                           path.read_text())
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
