"""No import circles inside tokenwire.

Every ``import`` counts, at module level, inside functions (lazy imports) and
under ``TYPE_CHECKING``: a lazy import hides a circle, it does not remove it.
A second graph holds what runs at import time (module-level imports, and the
package ``__init__`` files they run first: importing ``tokenwire.server.offsets``
from outside ``tokenwire.server`` runs ``tokenwire/server/__init__.py``): a
circle there is an ``ImportError`` for whichever module is imported first.
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


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.Module, *, eager_only: bool) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, or only those that run when the module is imported
    (at module level, not under ``TYPE_CHECKING``)."""
    if not eager_only:
        return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and not _type_checking(node):
            pending += node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody
            for handler in node.handlers:
                pending += handler.body
    return found


def imports_of(path: Path, name: str, known: set[str], *, eager_only: bool = False) -> set[str]:
    """The tokenwire modules ``name`` imports. ``eager_only``: those that run when it
    is imported, with the packages they run first (importing a.b.c from outside a.b
    runs a/b/__init__.py before it)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path)), eager_only=eager_only):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # ``from pkg import sub`` imports the module pkg.sub when there is one.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        for target in targets:
            if target not in known:
                continue
            found.add(target)
            if not eager_only:
                continue
            parts = target.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in known and not (name == parent or name.startswith(parent + ".")):
                    found.add(parent)
    found.discard(name)
    return found


def import_graph(*, eager_only: bool = False) -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {
        name: imports_of(path, name, known, eager_only=eager_only) for name, path in mods.items()
    }


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


def test_no_module_fails_when_imported_first() -> None:
    # The circles Python meets at import time, through package __init__ files:
    # e.g. tokenwire.core.ops -> tokenwire.server (its __init__ imports the app)
    # -> ... -> tokenwire.core.ops, an ImportError when core.ops comes first.
    assert cycles(import_graph(eager_only=True)) == []


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
    eager = {"tokenwire.client", "tokenwire.client.sync", "tokenwire.errors", "tokenwire"}
    assert imports_of(source, "tokenwire.m", eager | known, eager_only=True) == {"tokenwire.errors"}
    source.write_text("from tokenwire.client.sync import SyncClient\n")
    assert imports_of(source, "tokenwire.m", eager, eager_only=True) == {
        "tokenwire.client",
        "tokenwire.client.sync",
    }
