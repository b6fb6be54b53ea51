"""No import circles inside tokenwire.

Every ``import`` counts, at module level, inside functions (lazy imports) and
under ``TYPE_CHECKING``: a lazy import hides a circle, it does not remove it.
The edge from a module to its parent package's ``__init__`` that Python adds
implicitly is not counted; an explicit ``from tokenwire.client import X`` is.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tokenwire

ROOT = Path(tokenwire.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # ``from pkg import sub`` imports the module pkg.sub when there is one.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, name, known) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_circles() -> None:
    assert cycles(import_graph()) == []


def test_the_checker_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    # The two circles this test was written against, rebuilt in miniature: a lazy
    # import inside a method, and one under TYPE_CHECKING.
    graph = {
        "a.client": {"a.sync"},  # from a.sync import SyncClient, inside Client.sync()
        "a.sync": {"a.client"},
        "a.tensors": {"a.mlx"},
        "a.mlx": {"a.tensors"},
        "a.leaf": set(),
    }
    assert cycles(graph) == [["a.client", "a.sync"], ["a.mlx", "a.tensors"]]
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from tokenwire.client.sync import SyncClient\n"
        "def f():\n    from tokenwire.mlx_context import import_mlx\n"
        "from tokenwire import errors\n"
    )
    known = {"tokenwire.client.sync", "tokenwire.mlx_context", "tokenwire.errors", "tokenwire"}
    assert imports_of(source, "tokenwire.m", known) == {
        "tokenwire.client.sync",
        "tokenwire.mlx_context",
        "tokenwire.errors",
    }
