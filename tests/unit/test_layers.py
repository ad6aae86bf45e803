"""Imports point down only: server -> strategies -> verifiers -> backends.

Every module of the four packages is parsed, type-checking-only imports included, and each
import of one of the packages must name its own layer or one below it. The benchmarks talk to
the gateway over HTTP and import none of them, except the one that replays stored samples
through the served rules in process (`bench/replay.py`), which never imports `server`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent
LAYERS = ("backends", "verifiers", "strategies", "server")


def imported_packages(source: str) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of every absolute import in `source`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def upward_imports(layer: str, source: str) -> list[str]:
    """The imports in a module of `layer` that name a layer above it."""
    rank = LAYERS.index(layer)
    return [
        f"line {line} imports {package}"
        for line, package in imported_packages(source)
        if package in LAYERS and LAYERS.index(package) > rank
    ]


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize(
    "path",
    [path for layer in LAYERS for path in modules(layer)],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_no_import_points_up(path: Path) -> None:
    layer = path.relative_to(ROOT).parts[0]
    assert upward_imports(layer, path.read_text()) == []


# Replaying stored samples through the real stopping rules is the point of this one.
REPLAY = ROOT / "bench" / "replay.py"


@pytest.mark.parametrize("path", modules("bench"), ids=lambda path: path.name)
def test_benchmarks_import_no_layer(path: Path) -> None:
    allowed = {"backends", "verifiers", "strategies"} if path == REPLAY else set()
    imported = [p for _, p in imported_packages(path.read_text()) if p in LAYERS]
    assert [p for p in imported if p not in allowed] == []


def test_the_check_sees_an_upward_import() -> None:
    source = (
        "from backends.base import Backend\n\nif True:\n    from server.app import create_app\n"
    )
    assert upward_imports("verifiers", source) == ["line 4 imports server"]
    assert upward_imports("server", source) == []
