"""The backends a server can run on, by the name `--backend` gives.

A backend is one module with a class like these: a `name`, a `settings_model` whose fields join
the server's settings (flags and `TTC_*` variables), and `create`, which builds the backend from
those settings. Adding one is that module and one line in `BACKENDS`.

A backend whose module imports something heavy (the embedded model imports torch) is entered by
a small kind of its own instead, which holds only its name and settings and imports the module
when the backend is built: the gateway's image has no torch, and building the app imports none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from backends.base import Backend, BackendSettings
from backends.embedded_settings import EmbeddedBackendSettings
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


class _Embedded:
    """The embedded CPU model (`backends.embedded`), imported when it is built."""

    name: ClassVar[str] = "embedded"
    settings_model: ClassVar[type[BackendSettings]] = EmbeddedBackendSettings

    @classmethod
    async def create(cls, settings: EmbeddedBackendSettings, clients: HTTPClients) -> Backend:
        """Import the embedded backend (and torch with it), then load the model."""
        from backends.embedded import EmbeddedBackend

        return await EmbeddedBackend.create(settings, clients)


BACKENDS: Mapping[str, BackendKind] = {
    kind.name: kind
    for kind in (
        _Embedded,
        VLLMBackend,
    )
}
