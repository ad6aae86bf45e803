"""The verifier kinds, by the `kind` a configured verifier names, and how the server builds them.

A verifier kind is one module with a config model (a `VerifierConfig` whose `kind` is a
`Literal` with that kind as its default) and a class with `config_model` and `create`. Adding
one is that module and one line in `VERIFIERS`; the server's settings accept its config from
then on.

Every verifier the server builds is wrapped in a `GuardedVerifier`: the one place where a
verifier's time is bounded and a failing model server (`BackendError`) becomes a
`VerifierError`, which the request answers with a 502 or, where allowed, a majority-vote
fallback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Protocol, Union

from pydantic import Field

from backends.base import Backend
from backends.errors import BackendError
from backends.vllm_client import HTTPClients
from verifiers.base import Candidate, Scores, Verifier, VerifierConfig, VerifierError
from verifiers.confidence import ConfidenceConfig, ConfidenceVerifier
from verifiers.llm_judge import LLMJudgeConfig, LLMJudgeVerifier
from verifiers.orm import ORMVerifier
from verifiers.prm import PRMVerifier

__all__ = [
    "DEFAULT_VERIFIERS",
    "VERIFIERS",
    "AnyVerifierConfig",
    "GuardedVerifier",
    "VerifierKind",
    "create_verifiers",
    "kind_of",
    "prm_names",
]


class VerifierKind(Protocol):
    """What the registry holds for a kind of verifier: its config and how to build it."""

    @property
    def config_model(self) -> type[VerifierConfig]:
        """Its settings, validated at start-up; their `kind` names it."""
        ...

    def create(self, config: Any, backend: Backend, clients: HTTPClients) -> Verifier:
        """The verifier `config` describes; `backend` is the gateway's own, and HTTP clients to
        other model servers come from `clients`."""
        ...


def kind_of(verifier: VerifierKind) -> str:
    """The `kind` a verifier's configs name: the default of their `kind` field."""
    kind: str = verifier.config_model.model_fields["kind"].default
    return kind


VERIFIERS: Mapping[str, VerifierKind] = {
    kind_of(verifier): verifier
    for verifier in (
        PRMVerifier,
        ORMVerifier,
        LLMJudgeVerifier,
        ConfidenceVerifier,
    )
}

if TYPE_CHECKING:
    AnyVerifierConfig = VerifierConfig
else:
    # Any registered kind's config, told apart by `kind`, so a bad one names its field.
    AnyVerifierConfig = Annotated[
        Union[tuple(kind.config_model for kind in VERIFIERS.values())],  # noqa: UP007
        Field(discriminator="kind"),
    ]

# The kinds that are process reward models: `auto` escalates to a weighted vote with one.
PRM_KINDS = frozenset({kind_of(PRMVerifier)})

# Configured out of the box on every backend; a setting of the same name replaces one.
DEFAULT_VERIFIERS: Mapping[str, VerifierConfig] = {
    "llm_judge": LLMJudgeConfig(),
    "confidence": ConfidenceConfig(),
}


class GuardedVerifier:
    """A verifier whose calls time out after `timeout_s` and fail only with `VerifierError`;
    `kind` is the kind it was configured as."""

    def __init__(self, name: str, inner: Verifier, timeout_s: float, kind: str = "") -> None:
        self.name = name
        self.kind = kind
        self._inner = inner
        self._timeout_s = timeout_s

    @property
    def logprobs(self) -> int | None:
        return self._inner.logprobs

    async def score(self, question: str, candidates: Sequence[Candidate]) -> Scores:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._inner.score(question, candidates)
        except TimeoutError as exc:
            raise VerifierError(f"{self.name} timed out after {self._timeout_s:g} s") from exc
        except BackendError as exc:
            raise VerifierError(f"{self.name} failed: {exc}") from exc


def create_verifiers(
    configs: Mapping[str, VerifierConfig], backend: Backend, clients: HTTPClients
) -> dict[str, Verifier]:
    """One guarded verifier per configured name."""
    return {
        name: GuardedVerifier(
            name,
            VERIFIERS[config.kind].create(config, backend, clients),
            config.timeout_s,
            config.kind,
        )
        for name, config in configs.items()
    }


def prm_names(verifiers: Mapping[str, Verifier]) -> frozenset[str]:
    """The names of the configured verifiers that are process reward models."""
    return frozenset(
        name
        for name, verifier in verifiers.items()
        if isinstance(verifier, GuardedVerifier) and verifier.kind in PRM_KINDS
    )
