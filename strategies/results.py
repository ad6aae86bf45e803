"""What the sampling strategies answer: the chosen candidates as choices, the whole run as the
trace, and the progress lines a streaming client asked for.

A candidate that answers with calls is returned with fresh call ids and finish_reason
`tool_calls` (`stop` where `tool_choice` named the function, as OpenAI and `none` answer). A
trace whose answers math-verify could not compare in time says so (`answers_compared_as_text`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backends.base import ChatPrompt, FinishReason, ForcedTool, ToolCall
from backends.tool_calls import new_call_id
from strategies.answer_groups import Vote, Votes
from strategies.base import Choice, StrategyRequest, StrategyResult
from strategies.context import StrategyContext
from strategies.sampling import Sampled, Scored
from strategies.stops import StopKind
from strategies.thinking import thinking_stopped
from verifiers.base import CandidateScore

__all__ = ["agreement", "report_scores", "report_votes", "result_of"]


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
    stop: StopKind | None = None,
) -> StrategyResult:
    """The chosen candidates as the answer, with the whole run as its trace; with `requested`
    (the N asked for), what was drawn against it and the tokens the undrawn ones would have
    cost at the drawn ones' mean. `stop` is why the drawing stopped; with `requested` and
    every candidate drawn, it defaults to `all_drawn`."""
    asked_logprobs = request.sampling.logprobs is not None
    # A named function forced: OpenAI (and `none`, as vLLM answers) end such a turn with "stop".
    calls_end: FinishReason = "stop" if _names_a_function(request) else "tool_calls"
    choices = tuple(
        Choice(
            content=candidates[i].text,
            finish_reason=calls_end if candidates[i].tool_calls else candidates[i].finish_reason,
            content_tokens=candidates[i].tokens - candidates[i].reasoning_tokens,
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
                # Each candidate's thinking, where it thought.
                **(
                    {"thinking": c.reasoning, "thinking_tokens": c.reasoning_tokens}
                    if c.reasoning
                    else {}
                ),
                **({"thinking_ended_by": c.thinking_ended} if c.thinking_ended else {}),
                **({"probes": list(c.probes)} if c.probes else {}),
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
        if stop is None and len(candidates) >= requested:
            stop = "all_drawn"
        undrawn = max(0, requested - len(candidates))
        spent = ctx.usage.completion_tokens + ctx.usage.verifier_tokens
        saved = round(undrawn * spent / len(candidates)) if candidates else 0
        trace["samples"] = {"requested": requested, "drawn": len(candidates), "tokens_saved": saved}
    if isinstance(votes, Votes) and votes.is_cut_off:
        trace["answers_compared_as_text"] = (
            "math-verify was stopped before it compared the answers (too slow or too long); "
            "they were grouped by their normalised text"
        )
    if fallback:
        trace["fallback"] = fallback
    # Candidates whose thinking was cut short stopped early too, whatever the vote did.
    thought = thinking_stopped([c.thinking_ended for c in candidates])
    stopped_early = "; ".join(s for s in (stopped_early, thought) if s) or None
    if stopped_early:
        trace["stopped_early"] = stopped_early
    return StrategyResult(
        choices,
        ctx.usage,
        stopped_early=stopped_early,
        trace=trace,
        fallback=fallback,
        tokens_saved=saved,
        agreement=agreement(candidates, chosen, votes),
        drawn=len(candidates) if requested is not None else 0,
        allowed=requested or 0,
        stop=stop,
    )


def agreement(
    candidates: Sequence[Sampled], chosen: Sequence[int], votes: Sequence[Vote]
) -> float | None:
    """The share of `candidates` in the first chosen one's answer group; without groups (a
    best-of-N that grouped none), of those whose extracted answer is the same text. None when
    the chosen candidate has no answer to agree with."""
    if not candidates or not chosen:
        return None
    first = chosen[0]
    for group in votes:
        if first in group.members:
            return len(group.members) / len(candidates)
    answer = candidates[first].answer
    if votes or answer is None:
        return None
    return sum(c.answer == answer for c in candidates) / len(candidates)


async def report_votes(ctx: StrategyContext, votes: Sequence[Vote], drawn: int, total: int) -> None:
    """Progress after a wave: how many candidates are drawn, the leading answer and its votes."""
    lead = (
        f"leading answer {_short(votes[0].answer)} with {votes[0].weight:g} of {drawn} votes"
        if votes
        else "no answer yet"
    )
    await ctx.progress(f"sampled {drawn} of {total}; {lead}")


async def report_scores(ctx: StrategyContext, scored: Scored) -> None:
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


def _names_a_function(request: StrategyRequest) -> bool:
    prompt = request.prompt
    tools = prompt.tools if isinstance(prompt, ChatPrompt) else None
    return tools is not None and isinstance(tools.choice, ForcedTool)
