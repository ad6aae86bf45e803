"""The params the sampling strategies share: how answers are extracted, how many candidates
are drawn and how, and which verifier scores them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from strategies.base import (
    MaxSpend,
    ParamsContext,
    StrategyParams,
    StrategyRequest,
    TracedParams,
    estimated_tokens,
    prompt_chars,
)
from strategies.early_stop import DeepConf, EarlyStop, Waves
from strategies.effort import effort_n
from strategies.limits import Limits
from verifiers.answer_match import AnswerFormat, compile_pattern
from verifiers.base import Aggregation

__all__ = ["AnswerParams", "CandidateParams", "VerifiedParams", "VoteStopParams"]


class AnswerParams(StrategyParams):
    """How a strategy that votes on answers extracts them from its candidates."""

    answer_format: AnswerFormat = "auto"
    answer_pattern: str | None = Field(default=None, description="For answer_format=regex.")

    @model_validator(mode="after")
    def _pattern_for_regex(self) -> AnswerParams:
        if self.answer_format == "regex":
            if not self.answer_pattern:
                raise ValueError("answer_format 'regex' needs answer_pattern")
            # RE2, linear in the text: a client's pattern cannot stall the server.
            compile_pattern(self.answer_pattern)
        return self


class CandidateParams(AnswerParams, TracedParams):
    """Params every sampling strategy takes."""

    n: int | None = Field(
        default=None, ge=1, description="Candidates to sample (default from reasoning_effort: 8)."
    )
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1, description="Tokens per candidate.")

    @property
    def is_verified(self) -> bool:
        """Whether a verifier reads the candidates."""
        return False

    def max_spend(self, request: StrategyRequest, limits: Limits) -> MaxSpend:
        """`n` candidates of `max_tokens` each, per requested choice."""
        return self.spend_for(request, effort_n(request, self.n, limits.max_n))

    def spend_for(
        self, request: StrategyRequest, samples: int, samples_param: str = "reasoning_params.n"
    ) -> MaxSpend:
        """The most `samples` candidates of `max_tokens` each, per requested choice, spend; a
        verifier reads each candidate once, with the question."""
        tokens = self.max_tokens or request.sampling.max_tokens
        per_candidate = tokens + self.probe_tokens(request)
        drawn = request.sampling.n * samples
        question = estimated_tokens(prompt_chars(request.prompt))
        return self.spend_of(
            request,
            samples=samples,
            generated=drawn * per_candidate,
            reads=drawn * (question + per_candidate) if self.is_verified else None,
            samples_param=samples_param,
        )


class VerifiedParams(CandidateParams):
    """Params of the strategies that score candidates with a verifier."""

    verifier: str = Field(default="confidence", description="A configured verifier's name.")
    aggregation: Aggregation = Field(
        default=Aggregation.LAST,
        description="How step scores reduce to one: last, min, prod, mean.",
    )
    on_verifier_error: Literal["error", "vote"] = Field(
        default="error", description="`vote`: fall back to majority vote, and say so."
    )
    early_stop: Waves | None = Field(
        default=None, description="Draw candidates in waves, each scored, until a rule stops."
    )

    @property
    def is_verified(self) -> bool:
        return True

    @model_validator(mode="after")
    def _known_verifier(self, info: ValidationInfo) -> VerifiedParams:
        ParamsContext.of(info.context).require_verifier(self.verifier)
        return self


class VoteStopParams(StrategyParams):
    """The `early_stop` of the strategies that vote (`majority_vote`, `weighted_vote`)."""

    early_stop: Annotated[EarlyStop | DeepConf, Field(discriminator="method")] | None = Field(
        default=None,
        description="Waves until the vote is settled, or DeepConf's confidence-filtered traces.",
    )

    @field_validator("early_stop")
    @classmethod
    def _warmup_below_n(
        cls, rule: EarlyStop | DeepConf | None, info: ValidationInfo
    ) -> EarlyStop | DeepConf | None:
        # DeepConf streams (and may stop) only the traces after its warm-up.
        n = info.data.get("n")
        if isinstance(rule, DeepConf) and n is not None and rule.warmup >= n:
            raise ValueError(
                f"deepconf's warmup ({rule.warmup}) must be below n ({n}): the traces after the "
                "warm-up are the ones it streams and stops"
            )
        return rule
