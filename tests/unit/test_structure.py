"""Guards that keep the packages in shape: one idea a module (at most 400 lines) and no import
cycle among the modules of one folder, type-checking-only imports included (a cycle through
`if TYPE_CHECKING:` is still two modules that cannot be read apart)."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent
PACKAGES = ("server", "strategies", "verifiers", "backends", "bench")
MAX_LINES = 400


def python_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_holds_one_idea(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{lines} lines: split it by idea"


def sibling_imports(source: str, package: str, siblings: set[str]) -> Iterator[str]:
    """The modules of `package` (a module's own folder, dotted) that `source` imports, however
    it names them."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = package
            elif node.level == 0 and node.module is not None:
                base = ""
            else:
                continue
            module = ".".join(part for part in (base, node.module or "") if part)
            names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            head, _, last = name.rpartition(".")
            if head == package and last in siblings:
                yield last


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def folders() -> list[Path]:
    return sorted({path.parent for path in python_files()})


@pytest.mark.parametrize("folder", folders(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_cycle_among_siblings(folder: Path) -> None:
    package = ".".join(folder.relative_to(ROOT).parts)
    modules = {path.stem: path for path in folder.glob("*.py")}
    graph = {
        name: set(sibling_imports(path.read_text(), package, set(modules))) - {name}
        for name, path in modules.items()
    }
    assert cycles(graph) == []


def test_the_cycle_check_sees_a_type_only_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    source = (
        "from typing import TYPE_CHECKING\n"
        "from strategies import y\n"
        "from . import z\n"
        "if TYPE_CHECKING:\n"
        "    from strategies.x import X\n"
        "    from backends.x import Other\n"
    )
    found = sibling_imports(source, "strategies", {"x", "y", "z", "w"})
    assert sorted(found) == ["x", "y", "z"]
