"""Each module's `__all__` names exactly its public definitions, as httpx checks its own."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

PACKAGES = ("server", "strategies", "verifiers", "backends")


def modules() -> list[ModuleType]:
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        found.append(package)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if info.name != "server.__main__":
                found.append(importlib.import_module(info.name))
    return found


@pytest.mark.parametrize("module", modules(), ids=lambda m: m.__name__)
def test_all_matches_public_definitions(module: ModuleType) -> None:
    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    }
    exported = set(getattr(module, "__all__", ()))
    assert all(hasattr(module, name) for name in exported), "__all__ names something missing"
    assert defined <= exported, f"public but not in __all__: {sorted(defined - exported)}"


def test_server_package_init_is_empty() -> None:
    # Every import names the module that owns the thing, as in starlette.
    init = importlib.import_module("server").__file__
    assert init is not None
    assert Path(init).read_text().strip() == ""
