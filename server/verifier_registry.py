"""Builds the configured verifiers at start-up, each behind a guard that bounds its time and
turns its failures into `VerifierError` (a 502, or a majority-vote fallback when allowed)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from server.backends.base import Backend, BackendError
from server.backends.http import create_client
from server.backends.vllm import VLLMBackend
from server.backends.vllm_pooling import VLLMRewardModel
from server.settings import VerifierConfig, VLLMSettings
from verifiers.base import Candidate, Scores, Verifier, VerifierError
from verifiers.confidence import ConfidenceConfig, ConfidenceVerifier
from verifiers.llm_judge import LLMJudgeConfig, LLMJudgeVerifier
from verifiers.orm import ORMConfig, ORMVerifier
from verifiers.prm import PRMConfig, PRMVerifier

__all__ = ["GuardedVerifier", "VerifierSet", "create_verifiers"]


class GuardedVerifier:
    """A verifier whose calls time out after `timeout_s` and fail only with `VerifierError`."""

    def __init__(self, name: str, inner: Verifier, timeout_s: float) -> None:
        self.name = name
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


@dataclass
class VerifierSet:
    """The named verifiers and the HTTP clients they own."""

    verifiers: dict[str, Verifier] = field(default_factory=dict)
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    async def aclose(self) -> None:
        """Close every client the verifiers opened."""
        for client in self.clients:
            await client.aclose()


def create_verifiers(
    configs: Mapping[str, VerifierConfig], backend: Backend, http: VLLMSettings
) -> VerifierSet:
    """One verifier per configured name; each vLLM-served one gets its own pooled client."""
    built = VerifierSet()

    def client() -> httpx.AsyncClient:
        built.clients.append(create_client(http))
        return built.clients[-1]

    for name, config in configs.items():
        inner: Verifier
        match config:
            case PRMConfig():
                model = VLLMRewardModel(client(), config.url, config.model, config.task)
                inner = PRMVerifier(model, config.format())
            case ORMConfig():
                model = VLLMRewardModel(client(), config.url, config.model, config.task)
                inner = ORMVerifier(model, config)
            case LLMJudgeConfig():
                judge = backend
                if config.url is not None:
                    judge = VLLMBackend(client(), [config.url], config.model)
                inner = LLMJudgeVerifier(judge, config)
            case ConfidenceConfig():
                inner = ConfidenceVerifier(config)
        built.verifiers[name] = GuardedVerifier(name, inner, config.timeout_s)
    return built
