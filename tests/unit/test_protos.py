import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_protos() -> None:
    result = subprocess.run([sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_generated_code_imports_from_the_protos_package() -> None:
    from flashtx_client.v1 import order_pb2

    assert order_pb2.DESCRIPTOR.package == "flashtx.v1"
    assert order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name == (
        "flashtx.v1.OrderService")


def _buf() -> str | None:
    """buf (from npm: @bufbuild/buf): FLASHTX_BUF, or on PATH."""
    return os.environ.get("FLASHTX_BUF") or shutil.which("buf")


def _run_buf(*args: str) -> subprocess.CompletedProcess[str]:
    buf = _buf()
    if buf is None:
        if os.environ.get("FLASHTX_TEST_REQUIRE_BUF") == "1":
            pytest.fail("buf is required here (FLASHTX_TEST_REQUIRE_BUF=1) and was not found")
        pytest.skip("buf not installed (npm install @bufbuild/buf; .ci/run does)")
    return subprocess.run([buf, *args], cwd=ROOT / "protos", capture_output=True, text=True)


def test_the_contract_passes_buf_lint() -> None:
    result = _run_buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_contract_is_wire_and_source_compatible_with_the_released_v1() -> None:
    """Changes to flashtx.v1 are additive: buf's FILE rules against the image of the
    released contract (protos/releases/v1.binpb)."""
    result = _run_buf("breaking", "--against", "releases/v1.binpb")
    assert result.returncode == 0, result.stdout + result.stderr
