"""`vllm_orm`: an outcome reward model served by vLLM, one score per whole candidate.

Two kinds of reward head: a sequence classifier on vLLM's `/classify` (the positive class's
probability), or a token-classification head on `/pooling` (the last token's row). Each
candidate is rendered with `template` (`{question}` and `{answer}`); all of a question's
candidates go in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field

from backends.base import Backend, RewardModel
from backends.reward_model import VLLMRewardModel
from backends.vllm_client import HTTPClients
from verifiers.base import Candidate, CandidateScore, Scores, VerifierConfig, VerifierError

__all__ = ["ORMConfig", "ORMVerifier"]


class ORMConfig(VerifierConfig):
    """Settings of a `vllm_orm` verifier."""

    kind: Literal["vllm_orm"] = "vllm_orm"
    url: str = Field(description="Base URL of the vLLM server running the reward model.")
    model: str = Field(description="The reward model's served name.")
    endpoint: Literal["classify", "pooling"] = "classify"
    template: str = Field(default="{question}\n\n{answer}", description="The model's input.")
    positive_index: int = Field(default=-1, description="Class whose probability is the score.")
    task: str | None = Field(default="token_classify", description="Pooling task (`pooling`).")


class ORMVerifier:
    """One score per candidate from a vLLM-served outcome reward model."""

    config_model: ClassVar[type[VerifierConfig]] = ORMConfig

    def __init__(self, model: RewardModel, config: ORMConfig) -> None:
        self._model = model
        self._config = config

    @classmethod
    def create(cls, config: ORMConfig, backend: Backend, clients: HTTPClients) -> ORMVerifier:
        """The reward model at `config.url`, on a pooled client of its own."""
        return cls(VLLMRewardModel(clients.open(), config.url, config.model, config.task), config)

    @property
    def logprobs(self) -> int | None:
        return None

    async def score(self, question: str, candidates: Sequence[Candidate]) -> Scores:
        texts = [self._config.template.format(question=question, answer=c.text) for c in candidates]
        if self._config.endpoint == "classify":
            outputs = await self._model.classify(texts)
        else:
            outputs = await self._model.pool(texts)
        index = self._config.positive_index
        try:
            # /classify answers one row; a token head answers one per token, the last one decides.
            values = tuple(rows[-1][index] for rows in outputs.rows)
        except IndexError:
            raise VerifierError(f"ORM output has no class {index}") from None
        return Scores(tuple(CandidateScore(v) for v in values), tokens=outputs.prompt_tokens)
