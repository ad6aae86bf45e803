"""What the sampling strategies share: their params, sampling N candidates in one call,
extracting and voting on answers, and building the result and its trace.

Tie-breaking, everywhere: among equal votes, weights or scores, the candidate (or answer group)
that appeared first wins, so a run is reproducible from its candidates.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from server.backends.base import ChatPrompt, FinishReason, Prompt, TokenLogprob
from strategies.base import Choice, ParamsContext, StrategyContext, StrategyRequest, StrategyResult
from verifiers.answer_match import AnswerFormat, extract_answer, group_answers
from verifiers.base import Aggregation, Candidate, CandidateScore, VerifierError

__all__ = [
    "EFFORT_N",
    "CandidateParams",
    "Sampled",
    "VerifiedParams",
    "Vote",
    "effort_n",
    "question_of",
    "rank_groups",
    "result_of",
    "sample",
    "verify",
]

# Candidates per request when neither `reasoning_params.n` nor the request says otherwise.
EFFORT_N = {"low": 4, "medium": 8, "high": 16}


class CandidateParams(BaseModel):
    """Params every sampling strategy takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int | None = Field(
        default=None, ge=1, description="Candidates to sample (default from reasoning_effort: 8)."
    )
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1, description="Tokens per candidate.")
    answer_format: AnswerFormat = "auto"
    answer_pattern: str | None = Field(default=None, description="For answer_format=regex.")
    return_trace: bool = False

    @model_validator(mode="after")
    def _within_limits(self, info: ValidationInfo) -> CandidateParams:
        limits = ParamsContext.of(info.context)
        if self.n is not None and self.n > limits.max_n:
            raise ValueError(f"n is {self.n}; this server allows at most {limits.max_n}")
        if self.max_tokens is not None and self.max_tokens > limits.max_tokens:
            raise ValueError(f"max_tokens is over this server's {limits.max_tokens}")
        if self.answer_format == "regex":
            if not self.answer_pattern:
                raise ValueError("answer_format 'regex' needs answer_pattern")
            try:
                re.compile(self.answer_pattern)
            except re.error as exc:
                raise ValueError(f"answer_pattern is not a valid regex: {exc}") from exc
        return self

    def candidates(self, request: StrategyRequest, max_n: int) -> int:
        """How many candidates to sample: `n`, else the effort's default within the limit."""
        return effort_n(request, self.n, max_n)


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

    @model_validator(mode="after")
    def _known_verifier(self, info: ValidationInfo) -> VerifiedParams:
        ParamsContext.of(info.context).require_verifier(self.verifier)
        return self


@dataclass(frozen=True)
class Sampled:
    """One candidate: its text, the answer extracted from it, and what it cost."""

    text: str
    answer: str | None
    tokens: int
    finish_reason: FinishReason
    logprobs: tuple[TokenLogprob, ...] | None

    def for_verifier(self) -> Candidate:
        """The candidate as verifiers see it."""
        return Candidate(self.text, self.logprobs)


@dataclass(frozen=True)
class Vote:
    """An answer group with its members and their total vote (a count or a weight)."""

    answer: str
    members: tuple[int, ...]
    weight: float


def effort_n(request: StrategyRequest, n: int | None, max_n: int) -> int:
    """`n` when given, else the default of the request's `reasoning_effort`, within `max_n`."""
    if n is not None:
        return n
    return min(EFFORT_N[request.reasoning_effort or "medium"], max_n)


def question_of(prompt: Prompt) -> str:
    """What verifiers are told the question is: the last user turn, or the raw prompt."""
    if isinstance(prompt, ChatPrompt):
        users = [m.content for m in prompt.messages if m.role == "user"]
        return users[-1] if users else prompt.messages[-1].content
    return prompt.text


async def sample(
    ctx: StrategyContext,
    request: StrategyRequest,
    params: CandidateParams,
    logprobs: int | None = None,
) -> list[Sampled]:
    """Sample the candidates in one backend call (`n` in the request) and extract answers."""
    wanted = [v for v in (request.sampling.logprobs, logprobs) if v is not None]
    sampling = dataclasses.replace(
        request.sampling,
        n=params.candidates(request, ctx.budget.max_candidates),
        temperature=request.sampling.temperature
        if params.temperature is None
        else params.temperature,
        max_tokens=params.max_tokens or request.sampling.max_tokens,
        logprobs=max(wanted) if wanted else None,
    )
    generation = await ctx.generate(request.prompt, sampling)
    return [
        Sampled(
            text=c.text,
            answer=extract_answer(c.text, params.answer_format, params.answer_pattern),
            tokens=c.tokens,
            finish_reason=c.finish_reason,
            logprobs=c.logprobs,
        )
        for c in generation.completions
    ]


async def verify(
    ctx: StrategyContext,
    request: StrategyRequest,
    params: VerifiedParams,
    candidates: Sequence[Sampled],
) -> tuple[tuple[CandidateScore, ...] | None, str | None]:
    """The verifier's scores, or, when it fails and the request allows voting instead, None and
    the reason to report."""
    try:
        scores = await ctx.verify(
            params.verifier, question_of(request.prompt), [c.for_verifier() for c in candidates]
        )
    except VerifierError as exc:
        if params.on_verifier_error == "error":
            raise
        return None, f"verifier {params.verifier!r} failed ({exc}); answered by majority vote"
    return scores, None


async def rank_groups(candidates: Sequence[Sampled], weights: Sequence[float] | None) -> list[Vote]:
    """Answer groups, best first: by total vote (a count, or the sum of `weights`), then by
    which group's first member came first."""
    groups = await group_answers([c.answer for c in candidates])
    votes = [
        Vote(
            g.answer,
            tuple(g.members),
            float(len(g.members)) if weights is None else sum(weights[i] for i in g.members),
        )
        for g in groups
    ]
    return sorted(votes, key=lambda v: (-v.weight, v.members[0]))


def result_of(
    ctx: StrategyContext,
    request: StrategyRequest,
    strategy: str,
    candidates: Sequence[Sampled],
    chosen: Sequence[int],
    *,
    scores: Sequence[CandidateScore] | None = None,
    aggregation: Aggregation = Aggregation.LAST,
    votes: Sequence[Vote] = (),
    fallback: str | None = None,
) -> StrategyResult:
    """The chosen candidates as the answer, with the whole run as its trace."""
    asked_logprobs = request.sampling.logprobs is not None
    choices = tuple(
        Choice(
            content=candidates[i].text,
            finish_reason=candidates[i].finish_reason,
            content_tokens=candidates[i].tokens,
            logprobs=candidates[i].logprobs if asked_logprobs else None,
        )
        for i in chosen
    )
    trace: dict[str, Any] = {
        "strategy": strategy,
        "candidates": [
            {
                "text": c.text,
                "answer": c.answer,
                "score": scores[i].aggregated(aggregation) if scores else None,
                "step_scores": _steps(scores[i]) if scores else None,
                "tokens": c.tokens,
            }
            for i, c in enumerate(candidates)
        ],
        "votes": {v.answer: v.weight for v in votes},
        "answer": candidates[chosen[0]].answer if chosen else None,
    }
    if fallback:
        trace["fallback"] = fallback
    return StrategyResult(choices, ctx.usage, trace=trace, fallback=fallback)


def _steps(score: CandidateScore) -> list[float] | None:
    return list(score.steps) if score.steps else None
