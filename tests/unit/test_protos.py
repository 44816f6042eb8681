import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_protos() -> None:
    result = subprocess.run([sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_generated_code_imports_from_the_protos_package() -> None:
    from protos.flashtx.v1 import order_pb2

    assert order_pb2.DESCRIPTOR.package == "flashtx.v1"
    assert order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name == (
        "flashtx.v1.OrderService")
