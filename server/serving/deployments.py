"""The served models: the backend's own, and further ones by name, each a `Deployment`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from backends.base import Backend
from server.errors import ModelNotFound
from strategies.base import ParamsContext
from strategies.limits import Limits
from strategies.thinking_params import DEFAULT_TAGS, ThinkingTags
from verifiers.base import Verifier
from verifiers.registry import prm_names

__all__ = ["Deployment", "Deployments", "NamedModel"]

# A model served by name: the backend that generates its text, its verifiers by name, and how
# it delimits its thinking.
NamedModel = tuple[Backend, Mapping[str, Verifier], ThinkingTags]


@dataclass(frozen=True)
class Deployment:
    """One served model: the backend that generates its text, the verifiers its requests
    may name, and how the model delimits its thinking."""

    backend: Backend
    verifiers: Mapping[str, Verifier]
    params_context: ParamsContext
    thinking_tags: ThinkingTags = ThinkingTags()


class Deployments:
    """Which deployment serves a request's `model`: the backend's own model (the primary),
    whatever the backend calls it, or one of `named_models`."""

    def __init__(
        self,
        backend: Backend,
        verifiers: Mapping[str, Verifier],
        named_models: Mapping[str, NamedModel],
        limits: Limits,
        thinking_tags: ThinkingTags = DEFAULT_TAGS,
    ) -> None:
        self._limits = limits
        self.primary = self._deployment(backend, verifiers, thinking_tags)
        self.named = {name: self._deployment(*model) for name, model in named_models.items()}

    @property
    def backend(self) -> Backend:
        """The backend of the model served without a name in the settings."""
        return self.primary.backend

    async def by_name(self) -> dict[str, Deployment]:
        """Every served model by name, the primary first."""
        return {await self.primary.backend.model_name(): self.primary, **self.named}

    async def find(self, model: str) -> Deployment:
        """The deployment serving `model`; `ModelNotFound` if none does."""
        named = self.named.get(model)
        if named is not None:
            return named
        served = await self.primary.backend.model_name()
        if model != served:
            raise ModelNotFound(model, [served, *self.named])
        return self.primary

    def _deployment(
        self, backend: Backend, verifiers: Mapping[str, Verifier], tags: ThinkingTags
    ) -> Deployment:
        context = ParamsContext(
            verifiers=frozenset(verifiers),
            prms=prm_names(verifiers),
            limits=self._limits,
            logprob_verifiers=frozenset(n for n, v in verifiers.items() if v.logprobs is not None),
        )
        return Deployment(backend, dict(verifiers), context, tags)
