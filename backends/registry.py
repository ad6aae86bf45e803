"""The backends a server can run on, by the name `--backend` gives.

A backend is one module with a class like these: a `name`, a `settings_model` whose fields join
the server's settings (flags and `TTC_*` variables), and `create`, which builds the backend from
those settings. Adding one is that module and one line in `BACKENDS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from backends.base import Backend, BackendSettings
from backends.embedded import EmbeddedBackend
from backends.vllm import VLLMBackend
from backends.vllm_client import HTTPClients

__all__ = ["BACKENDS", "BackendKind"]


class BackendKind(Protocol):
    """What the registry holds for a backend: its name, its settings, and how to build it."""

    @property
    def name(self) -> str:
        """The value of `--backend` that chooses it."""
        ...

    @property
    def settings_model(self) -> type[BackendSettings]:
        """Its part of the server's settings."""
        ...

    async def create(self, settings: Any, clients: HTTPClients) -> Backend:
        """The backend, loaded and ready to take calls; `settings` are the server's settings,
        which include this backend's `settings_model`, and HTTP clients come from `clients`."""
        ...


BACKENDS: Mapping[str, BackendKind] = {
    kind.name: kind
    for kind in (
        EmbeddedBackend,
        VLLMBackend,
    )
}
