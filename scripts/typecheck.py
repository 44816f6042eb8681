"""mypy (strict, as pyproject.toml configures it) over the flashtx package as it installs:
engine/, actors/, … under the names flashtx.engine, flashtx.actors, ….

mypy derives a module's name from its folders and does not run setuptools' editable
import hook, so it cannot see that engine/orders.py is flashtx.engine.orders. This script
names every file itself from `[tool.setuptools.package-dir]` (the one mapping) and hands
the list to mypy's build: one path per file, the tree free of links. Also checked: the
tests that exist for the type checker (the ports' conformance). Exit status 1 on any
finding. ``python scripts/typecheck.py``
"""

from __future__ import annotations

import sys
import time
import tomllib
from pathlib import Path

from mypy import build
from mypy.fscache import FileSystemCache
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parents[1]
TYPED_TESTS = ["tests/unit/test_ports.py"]


def package_dirs() -> dict[str, Path]:
    """flashtx's packages (from its package-dir) and the client package (clients/python)."""
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {package: ROOT / folder for package, folder in settings["package-dir"].items()}
    found["flashtx_client"] = ROOT / "clients" / "python" / "src" / "flashtx_client"
    return found


def module_name(package: str, folder: Path, path: Path) -> str:
    parts = path.relative_to(folder).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((package, *parts))


def sources() -> list[BuildSource]:
    """Every module of the package under its installed name (a folder mapped on its own,
    such as engine/ under flashtx/, is named by its own mapping), and the typed tests."""
    folders = package_dirs()
    found: dict[Path, str] = {}
    for package, folder in sorted(folders.items(), key=lambda item: len(item[0])):
        for path in folder.rglob("*.py"):
            stub = path.with_suffix(".pyi")  # generated code comes with its stubs
            found[(stub if stub.exists() else path).resolve()] = module_name(package, folder,
                                                                               path)
    for test in TYPED_TESTS:
        path = ROOT / test
        for parent in reversed(path.relative_to(ROOT).parents[:-1]):
            found[(ROOT / parent / "__init__.py").resolve()] = ".".join(parent.parts)
        found[path.resolve()] = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return [BuildSource(str(path), module) for path, module in sorted(found.items())]


def main() -> int:
    started = time.monotonic()
    _, options = process_options(["--config-file", str(ROOT / "pyproject.toml"),
                                  "-c", "pass"])  # the config's options; sources are ours
    listed = sources()
    messages: list[str] = []

    def collect(filename: str | None, new: list[str], serious: bool) -> None:
        messages.extend(new)

    try:
        build.build(listed, options, None, collect, FileSystemCache(), sys.stdout, sys.stderr)
    except build.CompileError as error:
        messages.extend(error.messages)
    errors = [m for m in messages if ": error:" in m]
    for message in messages:
        print(message)
    took_s = time.monotonic() - started
    if errors:
        print(f"mypy: {len(errors)} error(s) in {len(listed)} files ({took_s:.1f} s)")
        return 1
    print(f"mypy: no issues in {len(listed)} files ({took_s:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
