"""The backends package stays in small modules that import one another one way only.

Every module is at most `MAX_LINES` long, and no two modules of the package import each other,
directly or round a longer loop: imports made only for type checking and imports inside
functions count too, since each is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent.parent.parent / "backends"
MAX_LINES = 400


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def name_of(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(
        ".__init__"
    )


def imported_modules(source: str, known: set[str]) -> set[str]:
    """The package's modules that `source` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            # `from backends import vllm` imports the module `backends.vllm`.
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found & known


def import_graph() -> dict[str, set[str]]:
    paths = {name_of(path): path for path in modules()}
    known = set(paths)
    return {
        name: imported_modules(path.read_text(), known) - {name} for name, path in paths.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One loop through each group of modules that import one another (Tarjan's components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while (member := stack.pop()) != node:
                group.append(member)
            group.append(node)
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda path: path.name)
def test_module_is_small(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_no_modules_import_each_other() -> None:
    assert cycles(import_graph()) == []


def test_the_check_sees_a_type_only_cycle() -> None:
    a = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from backends.b import B\n"
    b = "from backends import a\n"
    known = {"backends.a", "backends.b"}
    graph = {"backends.a": imported_modules(a, known), "backends.b": imported_modules(b, known)}
    assert cycles(graph) == [["backends.a", "backends.b"]]
