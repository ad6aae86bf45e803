"""What the sampling strategies share: their params, sampling N candidates in one call, scoring
them, voting on their answers, and building the result and its trace.

`VerifiedSelection` is the shape of the strategies that pick with a verifier (best-of-N,
weighted vote): sample N candidates in one backend call, score them all in one verifier call,
then choose. If the verifier fails or times out, the request fails with a 502, unless its
`on_verifier_error` is `vote`: then the same candidates are majority-voted, and the response
says so in `reasoning_fallback`.

With `tools`, a candidate is either text or a set of tool calls. Calls vote as one answer,
by function name and arguments in canonical JSON (keys sorted, numbers normalised) whatever
their order; the winner's calls are returned with fresh ids and finish_reason `tool_calls`.
When `tool_choice` forces a call (`required`, or a named function), a candidate with no calls
was cut off before its call closed: it has no answer and no vote, as a cut-off JSON answer.

With `response_format`, every candidate is JSON, and its answer is the whole of it in canonical
form (`verifiers.answer_match.canonical_json`): votes group equal JSON values, whatever their key
order or spacing; a candidate cut off before its JSON closed has no answer and no vote.

Ties, everywhere, follow `strategies.ranking`: among equal votes, weights or scores, the
candidate (or answer group) that appeared first wins.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, model_validator

from backends.base import ChatPrompt, Completion, FinishReason, Prompt, TokenLogprob, ToolCall
from backends.tool_calls import new_call_id, render_call
from strategies.base import (
    Choice,
    MaxSpend,
    ParamsContext,
    StrategyParams,
    StrategyRequest,
    StrategyResult,
)
from strategies.context import StrategyContext
from strategies.early_stop import EarlyStop, Waves, settled
from strategies.effort import effort_n
from strategies.limits import Limits
from strategies.ranking import ranked
from verifiers.answer_match import AnswerFormat, canonical_json, extract_answer, group_answers
from verifiers.base import Aggregation, Candidate, CandidateScore, VerifierError

__all__ = [
    "AnswerParams",
    "CandidateParams",
    "Draws",
    "Sampled",
    "Scored",
    "VerifiedParams",
    "VerifiedSelection",
    "Vote",
    "calls_answer",
    "question_of",
    "rank_groups",
    "result_of",
    "sample",
    "sample_and_verify",
    "sample_until_settled",
    "vote",
]


class AnswerParams(StrategyParams):
    """How a strategy that votes on answers extracts them from its candidates."""

    answer_format: AnswerFormat = "auto"
    answer_pattern: str | None = Field(default=None, description="For answer_format=regex.")

    @model_validator(mode="after")
    def _pattern_for_regex(self) -> AnswerParams:
        if self.answer_format == "regex":
            if not self.answer_pattern:
                raise ValueError("answer_format 'regex' needs answer_pattern")
            try:
                re.compile(self.answer_pattern)
            except re.error as exc:
                raise ValueError(f"answer_pattern is not a valid regex: {exc}") from exc
        return self


class CandidateParams(AnswerParams):
    """Params every sampling strategy takes."""

    n: int | None = Field(
        default=None, ge=1, description="Candidates to sample (default from reasoning_effort: 8)."
    )
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1, description="Tokens per candidate.")
    return_trace: bool = False
    stream_progress: bool = Field(
        default=False, description="Streamed: a reasoning line after each wave of candidates."
    )

    @property
    def is_trace_asked(self) -> bool:
        return self.return_trace

    @property
    def is_progress_asked(self) -> bool:
        return self.stream_progress

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
        """The most `samples` candidates of `max_tokens` each, per requested choice, spend."""
        per_candidate = self.max_tokens or request.sampling.max_tokens
        return self.spend_of(
            request,
            samples=samples,
            generated=request.sampling.n * samples * per_candidate,
            verified=self.is_verified,
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


@dataclass(frozen=True)
class Sampled:
    """One candidate: its text, the answer extracted from it (for calls, their canonical form;
    for a request constrained to JSON, `is_json`, the whole text in canonical form), and what it
    cost; `reasoning` is what the model server's reasoning parser split off it, shown when it is
    chosen."""

    text: str
    answer: str | None
    tokens: int
    finish_reason: FinishReason
    logprobs: tuple[TokenLogprob, ...] | None
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    is_json: bool = False

    def for_verifier(self) -> Candidate:
        """The candidate as verifiers see it: its text, then its calls as the model is asked
        to write them."""
        calls = "\n".join(render_call(c.name, c.arguments) for c in self.tool_calls)
        text = "\n".join(part for part in (self.text, calls) if part)
        return Candidate(text, self.logprobs)


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

    Without scores (`scores` None, `values` empty) the verifier failed and the request allowed a
    majority vote instead; `fallback` says so.
    """

    candidates: list[Sampled]
    scores: tuple[CandidateScore, ...] | None
    values: list[float]
    fallback: str | None = None
    stopped_early: str | None = None
    requested: int = 0


@dataclass(frozen=True)
class Vote:
    """An answer group with its members and their total vote (a count or a weight)."""

    answer: str
    members: tuple[int, ...]
    weight: float


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
    wave: tuple[int, int] | None = None,
    cap: int | None = None,
) -> list[Sampled]:
    """Sample the candidates in one backend call (`n` in the request) and extract answers;
    `wave` (its index and size) draws only that many, with a seed of its own; `cap` bounds each
    candidate's tokens below its `max_tokens`."""
    wanted = [v for v in (request.sampling.logprobs, logprobs) if v is not None]
    seed = request.sampling.seed
    if wave is not None and seed is not None:
        seed += wave[0]  # the same seed again would draw the same candidates again
    sampling = dataclasses.replace(
        request.sampling,
        n=effort_n(request, params.n, ctx.limits.max_n) if wave is None else wave[1],
        seed=seed,
        temperature=request.sampling.temperature
        if params.temperature is None
        else params.temperature,
        max_tokens=min(params.max_tokens or request.sampling.max_tokens, cap or sys.maxsize),
        logprobs=max(wanted) if wanted else None,
    )
    generation = await ctx.generate(request.prompt, sampling)
    is_json = sampling.structured is not None
    forced = isinstance(request.prompt, ChatPrompt) and bool(
        request.prompt.tools and request.prompt.tools.is_forced
    )
    return [
        Sampled(
            text=c.text,
            answer=_answer(c, params, is_json, forced),
            tokens=c.tokens,
            finish_reason=c.finish_reason,
            logprobs=c.logprobs,
            reasoning=c.reasoning,
            tool_calls=c.tool_calls,
            is_json=is_json,
        )
        for c in generation.completions
    ]


def _answer(c: Completion, params: CandidateParams, is_json: bool, forced: bool) -> str | None:
    """What a candidate votes for: its calls; else, where a call was forced, nothing (its call
    was cut off before it closed); else its JSON in canonical form (no answer format applies to
    JSON); else the answer its format extracts."""
    if c.tool_calls:
        return calls_answer(c.tool_calls)
    if forced:
        return None
    if is_json:
        return canonical_json(c.text)
    return extract_answer(c.text, params.answer_format, params.answer_pattern)


async def sample_until_settled(
    ctx: StrategyContext,
    request: StrategyRequest,
    params: CandidateParams,
    rule: EarlyStop | None,
) -> Draws:
    """Without a rule or budget, the candidates of one call. With a rule, candidates in waves
    until the majority vote over them is settled (or all `n` are drawn); with a budget, as many
    as it affords. The draws say why they stopped early."""
    draws = Draws.begin(ctx, request, params, rule)
    while (wave := draws.next_wave()) is not None:
        draws.drawn += await sample(ctx, request, params, wave=wave, cap=draws.cap)
        asked = rule is not None and draws.may_stop()
        # Ranked once per wave, for the rule and the progress line alike, and kept for the vote.
        draws.votes = None
        if asked or ctx.is_reporting_progress:
            draws.votes = await rank_groups(draws.drawn, weights=None)
            await _report_votes(ctx, draws.votes, len(draws.drawn), draws.total)
        if asked:
            assert rule is not None and draws.votes is not None
            voted = sum(len(v.members) for v in draws.votes)
            if settled(rule, [v.weight for v in draws.votes], voted, draws.left):
                draws.stopped = draws.settled()
                break
    return draws


# Candidates per call when only a time budget asks for waves: a check of the clock every wave.
TIMED_WAVE = 4


@dataclass
class Draws:
    """Candidates drawn so far towards a requested `total`, and how the next wave is sized: all
    that are left at once without a rule or budget; a rule's wave; never more than the budget's
    tokens left afford at the cost of the candidates so far (`max_tokens` each before the first).
    The first candidate is always drawn, capped (`cap`) to the tokens left."""

    ctx: StrategyContext
    rule: Waves | None
    total: int
    max_tokens: int
    drawn: list[Sampled]
    start: int
    cap: int | None = None
    stopped: str | None = None
    # The answer groups of `drawn`, when they were ranked after the last wave.
    votes: list[Vote] | None = None

    @classmethod
    def begin(
        cls,
        ctx: StrategyContext,
        request: StrategyRequest,
        params: CandidateParams,
        rule: Waves | None,
    ) -> Draws:
        total = effort_n(request, params.n, ctx.limits.max_n)
        max_tokens = params.max_tokens or request.sampling.max_tokens
        return cls(ctx, rule, total, max_tokens, [], _tokens(ctx))

    @property
    def left(self) -> int:
        """Candidates not drawn yet."""
        return self.total - len(self.drawn)

    def may_stop(self) -> bool:
        """Whether the rule is asked after a wave: candidates are left, and enough were drawn."""
        return self.rule is not None and self.rule.min_samples <= len(self.drawn) < self.total

    def settled(self) -> str:
        assert self.rule is not None
        return (
            f"early_stop: {self.rule.method} rule settled after {len(self.drawn)} of {self.total}"
        )

    def next_wave(self) -> tuple[int, int] | None:
        """The next wave's offset and size, or None when no more are drawn (`stopped` says
        why, if the budget stopped them)."""
        drawn, size = len(self.drawn), self.left
        if size <= 0:
            return None
        if self.rule is not None:
            size = min(size, self.rule.wave)
        budget = self.ctx.budget
        if budget.limited:
            if drawn and (reason := budget.spent()) is not None:
                self.stopped = reason
                return None
            if budget.deadline is not None and self.rule is None:
                size = min(size, TIMED_WAVE)
            left = budget.tokens_left()
            if left is not None:
                each = (_tokens(self.ctx) - self.start) / drawn if drawn else self.max_tokens
                size = min(size, int(left // max(1.0, each)))
                if size == 0 and drawn:
                    self.stopped = (
                        f"token budget reached ({left} tokens left; a candidate takes about "
                        f"{each:.0f})"
                    )
                    return None
                if size == 0:
                    size, self.cap = 1, max(1, left)
        return drawn, size


def _tokens(ctx: StrategyContext) -> int:
    """Generated and verifier tokens the request has spent."""
    return ctx.usage.completion_tokens + ctx.usage.verifier_tokens


async def sample_and_verify(
    ctx: StrategyContext,
    request: StrategyRequest,
    params: VerifiedParams,
    stop: Callable[[Scored, int], Awaitable[bool]] | None = None,
) -> Scored:
    """Sample the candidates (with the log-probabilities the verifier needs) and score them all
    in one verifier call; a failing verifier is an error unless the request allows a vote.
    With `early_stop`, waves of candidates, each scored in one call, until `stop` (told the
    candidates so far and how many are left) says the choice is settled; with a budget, as many
    as it affords."""
    needs = ctx.verifiers[params.verifier].logprobs
    draws = Draws.begin(ctx, request, params, params.early_stop)
    scores: list[CandidateScore] = []
    scored = Scored([], (), [], requested=draws.total)
    while (wave := draws.next_wave()) is not None:
        new = await sample(ctx, request, params, logprobs=needs, wave=wave, cap=draws.cap)
        draws.drawn += new
        try:
            scores += await ctx.verify(
                params.verifier, question_of(request.prompt), [c.for_verifier() for c in new]
            )
        except VerifierError as exc:
            if params.on_verifier_error == "error":
                raise
            reason = f"verifier {params.verifier!r} failed ({exc}); answered by majority vote"
            return Scored(draws.drawn, None, [], fallback=reason, requested=draws.total)
        scored = Scored(
            draws.drawn,
            tuple(scores),
            [s.aggregated(params.aggregation) for s in scores],
            requested=draws.total,
        )
        await _report_scores(ctx, scored)
        if stop is not None and draws.may_stop() and await stop(scored, draws.left):
            return dataclasses.replace(scored, stopped_early=draws.settled())
    return dataclasses.replace(scored, stopped_early=draws.stopped)


async def rank_groups(candidates: Sequence[Sampled], weights: Sequence[float] | None) -> list[Vote]:
    """Answer groups, best first: by total vote (a count, or the sum of `weights`). Text
    answers group by equivalence (`verifiers.answer_match`; JSON answers exactly, in canonical
    form), calls by their exact canonical form."""
    groups = await group_answers(
        [None if c.tool_calls else c.answer for c in candidates],
        exact=any(c.is_json for c in candidates),
    )
    members = [(g.answer, g.members) for g in groups]
    calls: dict[str, list[int]] = {}
    for i, c in enumerate(candidates):
        if c.tool_calls and c.answer is not None:
            calls.setdefault(c.answer, []).append(i)
    members += calls.items()
    votes = [
        Vote(
            answer,
            tuple(sorted(indices)),
            float(len(indices)) if weights is None else sum(weights[i] for i in indices),
        )
        for answer, indices in members
    ]
    # In the order of their first members, so that a tie goes to the earlier group.
    in_order = sorted(votes, key=lambda v: v.members[0])
    return ranked(in_order, key=lambda v: v.weight)


async def vote(
    ctx: StrategyContext,
    request: StrategyRequest,
    candidates: Sequence[Sampled],
    strategy: str,
    fallback: str | None = None,
    stopped_early: str | None = None,
    requested: int | None = None,
    votes: Sequence[Vote] | None = None,
) -> StrategyResult:
    """Majority vote over sampled candidates: the first candidate of each of the `n` largest
    answer groups; with no answer to vote on, the first candidate. `votes` are the candidates'
    answer groups, when the caller has ranked them already."""
    if votes is None:
        votes = await rank_groups(candidates, weights=None)
    chosen = [v.members[0] for v in votes[: request.sampling.n]] or [0]
    return result_of(
        ctx,
        request,
        strategy,
        candidates,
        chosen,
        votes=votes,
        fallback=fallback,
        stopped_early=stopped_early,
        requested=requested,
    )


class VerifiedSelection(ABC):
    """A strategy that samples N candidates, scores them with a verifier, and `choose`s."""

    name: ClassVar[str]
    takes_tools: ClassVar[bool] = True
    takes_json: ClassVar[bool] = True
    params_model: ClassVar[type[StrategyParams]]

    async def run(
        self, request: StrategyRequest, params: VerifiedParams, ctx: StrategyContext
    ) -> StrategyResult:
        scored = await sample_and_verify(
            ctx, request, params, lambda so_far, left: self.settled(so_far, params, left)
        )
        if scored.fallback is not None:
            # Majority vote answers, and the trace says so under its registered name.
            return await vote(
                ctx,
                request,
                scored.candidates,
                "majority_vote",
                scored.fallback,
                requested=scored.requested,
            )
        chosen, votes = await self.choose(scored, request.sampling.n, params.return_trace)
        return result_of(
            ctx,
            request,
            self.name,
            scored.candidates,
            chosen,
            scored=scored,
            votes=votes,
            stopped_early=scored.stopped_early,
            requested=scored.requested,
        )

    async def settled(self, scored: Scored, params: VerifiedParams, left: int) -> bool:
        """Whether the candidates so far settle the choice (with `early_stop`; `left` more
        could be drawn)."""
        return False

    @abstractmethod
    async def choose(
        self, scored: Scored, n: int, with_trace: bool
    ) -> tuple[list[int], list[Vote]]:
        """The `n` candidates that answer, and the answer groups' votes for the trace (which
        may be left out when no trace was asked for and the choice needs none)."""


def result_of(
    ctx: StrategyContext,
    request: StrategyRequest,
    strategy: str,
    candidates: Sequence[Sampled],
    chosen: Sequence[int],
    *,
    scored: Scored | None = None,
    votes: Sequence[Vote] = (),
    fallback: str | None = None,
    stopped_early: str | None = None,
    requested: int | None = None,
) -> StrategyResult:
    """The chosen candidates as the answer, with the whole run as its trace; with `requested`
    (the N asked for), what was drawn against it and the tokens the undrawn ones would have
    cost at the drawn ones' mean."""
    asked_logprobs = request.sampling.logprobs is not None
    choices = tuple(
        Choice(
            content=candidates[i].text,
            finish_reason="tool_calls" if candidates[i].tool_calls else candidates[i].finish_reason,
            content_tokens=candidates[i].tokens,
            reasoning=candidates[i].reasoning,
            logprobs=candidates[i].logprobs if asked_logprobs else None,
            # Fresh ids: the same calls may answer more than one choice (or request).
            tool_calls=tuple(
                ToolCall(new_call_id(), c.name, c.arguments) for c in candidates[i].tool_calls
            ),
        )
        for i in chosen
    )
    scores = scored.scores if scored is not None else None
    values = scored.values if scored is not None else []
    trace: dict[str, Any] = {
        "strategy": strategy,
        "candidates": [
            {
                "text": c.text,
                "answer": c.answer,
                "score": values[i] if scores else None,
                "step_scores": _steps(scores[i]) if scores else None,
                "tokens": c.tokens,
                **(
                    {
                        "tool_calls": [
                            {"name": t.name, "arguments": t.arguments} for t in c.tool_calls
                        ]
                    }
                    if c.tool_calls
                    else {}
                ),
            }
            for i, c in enumerate(candidates)
        ],
        "votes": {v.answer: v.weight for v in votes},
        "answer": candidates[chosen[0]].answer if chosen else None,
    }
    saved = 0
    if requested is not None:
        undrawn = max(0, requested - len(candidates))
        spent = ctx.usage.completion_tokens + ctx.usage.verifier_tokens
        saved = round(undrawn * spent / len(candidates)) if candidates else 0
        trace["samples"] = {"requested": requested, "drawn": len(candidates), "tokens_saved": saved}
    if fallback:
        trace["fallback"] = fallback
    if stopped_early:
        trace["stopped_early"] = stopped_early
    return StrategyResult(
        choices,
        ctx.usage,
        stopped_early=stopped_early,
        trace=trace,
        fallback=fallback,
        tokens_saved=saved,
    )


async def _report_votes(
    ctx: StrategyContext, votes: Sequence[Vote], drawn: int, total: int
) -> None:
    """Progress after a wave: how many candidates are drawn, the leading answer and its votes."""
    lead = (
        f"leading answer {_short(votes[0].answer)} with {votes[0].weight:g} of {drawn} votes"
        if votes
        else "no answer yet"
    )
    await ctx.progress(f"sampled {drawn} of {total}; {lead}")


async def _report_scores(ctx: StrategyContext, scored: Scored) -> None:
    """Progress after a scored wave: how many candidates are drawn, the best score and its
    answer."""
    if not scored.values:
        return
    top = max(range(len(scored.values)), key=scored.values.__getitem__)
    answer = scored.candidates[top].answer
    await ctx.progress(
        f"sampled {len(scored.candidates)} of {scored.requested}; best score "
        f"{scored.values[top]:.3f} (answer {_short(answer) if answer is not None else 'none'})"
    )


def _short(answer: str, width: int = 40) -> str:
    """An answer as a progress line shows it: on one line, cut to `width` characters."""
    flat = " ".join(answer.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _steps(score: CandidateScore) -> list[float] | None:
    return list(score.steps) if score.steps else None
