"""Sampling candidates: the one place that builds their sampling params and extracts their
answers.

`sample` draws N candidates in one backend call (or one wave of them, with a seed of its own).
With `tools`, a candidate is either text or a set of tool calls. Calls vote as one answer,
by function name and arguments in canonical JSON (keys sorted, numbers normalised) whatever
their order. When `tool_choice` forces a call (`required`, or a named function), a candidate
with no calls was cut off before its call closed: it has no answer and no vote, as a cut-off
JSON answer.

With `response_format`, every candidate is JSON, and its answer is the whole of it in canonical
form (`verifiers.answer_match.canonical_json`); a candidate cut off before its JSON closed has no
answer and no vote.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from backends.base import (
    ChatPrompt,
    Completion,
    FinishReason,
    Prompt,
    SamplingParams,
    TokenLogprob,
    ToolCall,
)
from backends.tool_calls import render_call
from strategies.base import StrategyRequest
from strategies.candidate_params import AnswerParams, CandidateParams
from strategies.context import StrategyContext
from strategies.effort import effort_n
from strategies.stops import StopKind
from strategies.thinking import generate_thinking
from verifiers.answer_match import AnswerFormat, canonical_json, extract_answer
from verifiers.base import Candidate, CandidateScore, VerifierError

__all__ = [
    "Extraction",
    "Sampled",
    "Scored",
    "calls_answer",
    "question_of",
    "sample",
    "sampling_for",
    "score",
]


@dataclass(frozen=True)
class Sampled:
    """One candidate: its text, the answer extracted from it (for calls, their canonical form;
    for a request constrained to JSON, `is_json`, the whole text in canonical form), and what it
    cost; `reasoning` is its thinking (split off by the model server's reasoning parser or by the
    model's tags), shown when it is chosen, and `reasoning_tokens` how many of `tokens` it took."""

    text: str
    answer: str | None
    tokens: int
    finish_reason: FinishReason
    logprobs: tuple[TokenLogprob, ...] | None
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    is_json: bool = False
    reasoning_tokens: int = 0
    # Under a thinking control: why its thinking ended early (None: on its own), and what its
    # probes answered.
    thinking_ended: str | None = None
    probes: tuple[str | None, ...] = ()

    def for_verifier(self) -> Candidate:
        """The candidate as verifiers see it: its text, then its calls as the model is asked
        to write them."""
        calls = "\n".join(render_call(c.name, c.arguments) for c in self.tool_calls)
        text = "\n".join(part for part in (self.text, calls) if part)
        # Rendered calls are text the model did not write token by token: no count for them.
        return Candidate(text, self.logprobs, None if calls else self.tokens)


def calls_answer(calls: Sequence[ToolCall]) -> str:
    """The answer a set of calls votes for: each as `name(arguments)` in canonical JSON, in
    sorted order, so the same calls in any order, key order or number spelling agree."""
    return "; ".join(sorted(f"{c.name}({_arguments(c.arguments)})" for c in calls))


def _arguments(arguments: str) -> str:
    """Arguments in canonical JSON (none are `{}`); text that is not JSON as it is."""
    return canonical_json(arguments.strip() or "{}") or arguments


@dataclass(frozen=True)
class Scored:
    """Sampled candidates, the verifier's scores of them, and each score reduced to one value
    (`values`) by the request's aggregation.

    Without scores (`scores` None, `values` empty) the verifier failed with `error` and the
    request allowed a majority vote instead (`strategies.voting.vote_instead`).
    """

    candidates: list[Sampled]
    scores: tuple[CandidateScore, ...] | None
    values: list[float]
    error: VerifierError | None = None
    stopped_early: str | None = None
    requested: int = 0
    stop: StopKind | None = None


def question_of(prompt: Prompt) -> str:
    """What verifiers are told the question is: the last user turn, or the raw prompt."""
    if isinstance(prompt, ChatPrompt):
        users = [m.content for m in prompt.messages if m.role == "user"]
        return users[-1] if users else prompt.messages[-1].content
    return prompt.text


@dataclass(frozen=True)
class Extraction:
    """How a request's candidates are read for the answer they vote for: with `is_forced` (a
    `tool_choice` that forces a call) or `is_json` (a `response_format`), by those rules; else
    by the params' answer format."""

    answer_format: AnswerFormat = "auto"
    answer_pattern: str | None = None
    is_json: bool = False
    is_forced: bool = False

    @classmethod
    def of(cls, request: StrategyRequest, params: AnswerParams) -> Extraction:
        """The extraction `request` and its `params` ask for."""
        prompt = request.prompt
        forced = isinstance(prompt, ChatPrompt) and bool(prompt.tools and prompt.tools.is_forced)
        is_json = request.sampling.structured is not None
        return cls(params.answer_format, params.answer_pattern, is_json, forced)

    def answer(self, text: str, calls: Sequence[ToolCall] = ()) -> str | None:
        """What a candidate votes for: its calls; else, where a call was forced, nothing (its
        call was cut off before it closed); else its JSON in canonical form (no answer format
        applies to JSON); else the answer its format extracts."""
        if calls:
            return calls_answer(calls)
        if self.is_forced:
            return None
        if self.is_json:
            return canonical_json(text)
        return extract_answer(text, self.answer_format, self.answer_pattern)

    def sampled(self, completion: Completion) -> Sampled:
        """A completion as a candidate, with its answer."""
        return Sampled(
            text=completion.text,
            answer=self.answer(completion.text, completion.tool_calls),
            tokens=completion.tokens,
            finish_reason=completion.finish_reason,
            logprobs=completion.logprobs,
            reasoning=completion.reasoning,
            reasoning_tokens=completion.reasoning_tokens,
            tool_calls=completion.tool_calls,
            is_json=self.is_json,
        )


def sampling_for(
    request: StrategyRequest,
    params: CandidateParams,
    n: int,
    offset: int = 0,
    logprobs: Iterable[int | None] = (),
    cap: int | None = None,
) -> SamplingParams:
    """How `n` candidates are sampled: as the request samples, at the params' `temperature` and
    `max_tokens` (`cap` bounds it further), with the most log-probabilities the request or any of
    `logprobs` asks for; a seeded request's seed moves on by `offset`, the candidate's place in
    the run (the same seed again would draw the same candidates again)."""
    sampling = request.sampling
    wanted = [v for v in (sampling.logprobs, *logprobs) if v is not None]
    return dataclasses.replace(
        sampling,
        n=n,
        seed=None if sampling.seed is None else sampling.seed + offset,
        temperature=sampling.temperature if params.temperature is None else params.temperature,
        max_tokens=min(params.max_tokens or sampling.max_tokens, cap or sys.maxsize),
        logprobs=max(wanted) if wanted else None,
    )


async def sample(
    ctx: StrategyContext,
    request: StrategyRequest,
    params: CandidateParams,
    logprobs: int | None = None,
    wave: tuple[int, int] | None = None,
    cap: int | None = None,
) -> list[Sampled]:
    """Sample the candidates in one backend call (`n` in the request) and extract answers;
    `wave` (its index and size) draws only that many, with a seed of its own; `cap` bounds each
    candidate's tokens below its `max_tokens`."""
    if wave is None:
        wave = (0, effort_n(request, params.n, ctx.limits.max_n))
    sampling = sampling_for(request, params, wave[1], wave[0], (logprobs,), cap)
    thinking = params.thinking_of(request)
    generation, chains = await generate_thinking(
        ctx, request.prompt, sampling, thinking, ctx.thinking_tags
    )
    extraction = Extraction.of(request, params)
    sampled = [extraction.sampled(c) for c in generation.completions]
    if chains is None:
        return sampled
    return [
        dataclasses.replace(s, thinking_ended=ended, probes=probes)
        for s, ended, probes in zip(sampled, chains.ended, chains.probes, strict=True)
    ]


async def score(
    ctx: StrategyContext, request: StrategyRequest, verifier: str, candidates: Sequence[Sampled]
) -> tuple[CandidateScore, ...]:
    """The scores of `candidates` by the verifier configured as `verifier`, in one call, told the
    request's question."""
    question = question_of(request.prompt)
    return await ctx.verify(verifier, question, [c.for_verifier() for c in candidates])
