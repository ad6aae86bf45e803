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
from collections.abc import Sequence
from dataclasses import dataclass

from backends.base import ChatPrompt, Completion, FinishReason, Prompt, TokenLogprob, ToolCall
from backends.tool_calls import render_call
from strategies.base import StrategyRequest
from strategies.candidate_params import CandidateParams
from strategies.context import StrategyContext
from strategies.effort import effort_n
from verifiers.answer_match import canonical_json, extract_answer
from verifiers.base import Candidate, CandidateScore

__all__ = ["Sampled", "Scored", "calls_answer", "question_of", "sample"]


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
