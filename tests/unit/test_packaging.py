"""Installing flashtx adds one top-level package, `flashtx`: the repository's folders
(engine/, actors/, adapters/, bench/, protos/) install as flashtx.engine, … and nothing
generic lands in site-packages; its API code comes from the client package
(clients/python), which adds `flashtx_client` alone. The wheels are built here, unpacked
into a folder of their own, and imported from there."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_one_top_level_package_that_imports(tmp_path: Path) -> None:
    source = tmp_path / "source"  # pip builds in the tree: a copy, the checkout untouched
    shutil.copytree(REPO_ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "node_modules", "build", "*.egg-info", "__pycache__", ".*_cache"))
    for project in (source, source / "clients" / "python"):
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                        "--no-build-isolation", "-w", str(tmp_path / "dist"), str(project)],
                       check=True, cwd=tmp_path, timeout=300)
    (client,) = (tmp_path / "dist").glob("flashtx_client-*.whl")
    with zipfile.ZipFile(client) as archive:
        assert {name.split("/")[0] for name in archive.namelist()
                if ".dist-info/" not in name} == {"flashtx_client"}
        archive.extractall(tmp_path / "site")
    (wheel,) = (tmp_path / "dist").glob("flashtx-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site")
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"flashtx"}
    for data in ("flashtx/adapters/migrations/0001_initial.sql",
                 "flashtx/protos/flashtx/v1/order.proto", "flashtx/engine/orders.py",
                 "flashtx/bench/__main__.py"):
        assert data in names
    # Imported from the unpacked wheel, away from the repository.
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
         " import flashtx.app, flashtx.engine.orders, flashtx_client.v1.order_pb2;"
         " print(flashtx.engine.orders.__file__);"
         " print(flashtx_client.v1.order_pb2.__file__)", str(tmp_path / "site")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        str(tmp_path / "site" / "flashtx" / "engine" / "orders.py"),
        str(tmp_path / "site" / "flashtx_client" / "v1" / "order_pb2.py")]
