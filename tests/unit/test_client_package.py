"""flashtx-client (clients/python) as an application installs it: its wheel alone, in a
fresh virtual environment next to a grpcio of another minor version than the engine's,
without Ray and small; and its types, which `mypy --strict` checks a caller's requests
against."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"
OTHER_GRPCIO = "1.84.0"  # the engine pins 1.85.1
SIZE_MAX_MB = 30


def _uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert found, "uv is installed with the dev environment (Makefile)"
    return found


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def test_the_client_installs_alone_next_to_another_grpcio_and_stays_small(
        tmp_path: Path) -> None:
    source = tmp_path / "client"  # built from a copy: the checkout stays as it is
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("flashtx_client-*.whl")
    venv = tmp_path / "venv"
    uv = _uv()
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
                   check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([uv, "pip", "install", "--quiet", "--python", str(python),
                    f"grpcio=={OTHER_GRPCIO}", str(wheel)], check=True, timeout=300,
                   env={**os.environ, "UV_NO_PROGRESS": "1"})
    done = subprocess.run([str(python), "-c", (
        "import importlib.util, grpc, flashtx_client, flashtx_client.v1.order_pb2_grpc;"
        " from flashtx_client import Client, FlashtxError;"
        " from flashtx_client.v1 import order_pb2;"
        " print(grpc.__version__, importlib.util.find_spec('ray') is None,"
        " importlib.util.find_spec('flashtx') is None)")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [OTHER_GRPCIO, "True", "True"]
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert (site / "flashtx_client" / "py.typed").exists()
    assert (site / "flashtx_client" / "v1" / "order_pb2_grpc.pyi").exists()
    size_mb = _size_mb(site)
    assert size_mb < SIZE_MAX_MB, f"{size_mb:.1f} MB installed"


def test_the_generated_stubs_accept_the_grpcio_floor_the_client_declares() -> None:
    """The stubs' own version check is the client's grpcio floor (scripts/gen_protos.py)."""
    from flashtx_client.v1 import order_pb2_grpc

    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert f"grpcio>={order_pb2_grpc.GRPC_GENERATED_VERSION},<2" in project["dependencies"]
    assert not any(name.startswith(("ray", "flashtx")) for name in project["dependencies"])


_SAMPLE = """
from flashtx_client import Client, FlashtxError
from flashtx_client.v1 import order_pb2


async def place(client: Client) -> str:
    try:
        answer = await client.orders.PlaceOrder(order_pb2.PlaceOrderRequest(
            idempotency_key="k1", {buyer},
            lines=[order_pb2.OrderLine(sku_id="tv", quantity=1)]))
    except FlashtxError as error:
        return error.reason
    return answer.order.order_id
"""


@pytest.mark.parametrize("buyer, flagged", [('buyer_id="b1"', False), ('buyer="b1"', True)])
def test_mypy_strict_checks_a_callers_requests(tmp_path: Path, buyer: str,
                                               flagged: bool) -> None:
    """A request with a field the message does not have is flagged; the right one passes,
    its answer typed (returning `answer.order.order_id` as a str is not "Any")."""
    sample = tmp_path / "sample.py"
    sample.write_text(_SAMPLE.format(buyer=buyer))
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--config-file", os.devnull, str(sample)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    if flagged:
        assert done.returncode == 1, done.stdout
        assert 'Unexpected keyword argument "buyer"' in done.stdout, done.stdout
    else:
        assert done.returncode == 0, done.stdout
