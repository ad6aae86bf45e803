"""DeepConf online: vote only with confident traces, and stop the others while they are written.

After Fu et al., "Deep Think with Confidence" (2025), its online algorithm. A token's
confidence is minus the mean log-probability of its `top_logprobs` most likely alternatives
(`verifiers.confidence.token_confidence`); a group's confidence is the mean over a sliding
window of `window` tokens; a trace's confidence is its lowest group confidence (the mean of all
its tokens when it is shorter than a window). Higher is more confident.

1. Warm-up: sample `warmup` traces in one backend call, with their top log-probabilities.
2. Threshold: s is the (100 - keep)-th percentile of the warm-up traces' confidences, so that
   `keep` percent of them reach it (DeepConf-low keeps 10 %, DeepConf-high 90 %). Warm-up traces
   below s do not vote.
3. Generate the other traces, each streamed in a backend request of its own, `parallel` at a time
   (all at once by default). A trace is stopped as soon as a window of its tokens falls below s:
   its stream is closed, which aborts the backend's request. A trace shorter than a window is
   judged whole when it ends. Stopped traces do not vote.
4. Consensus (optional): once the leading answer holds at least `consensus` of the vote's
   weight, after the warm-up or any trace after it, sampling ends: the traces in flight are
   stopped at their next token and no more are started.
5. The traces that reached s vote, by the strategy's own rule: counted (`majority_vote`) or
   weighed by the confidence verifier (`weighted_vote`).

Within a token `budget`, the warm-up is as many traces as fit at `max_tokens` each (at least one,
cut to the tokens left), and a trace starts only while the tokens left, less what the traces in
flight are expected to take at the mean cost so far, afford one more.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from backends.base import Completion, SamplingParams, StreamDelta
from strategies.answer_groups import rank_groups
from strategies.base import StrategyRequest, StrategyResult
from strategies.candidate_params import CandidateParams
from strategies.context import StrategyContext
from strategies.early_stop import DeepConf
from strategies.effort import effort_n
from strategies.sampling import Extraction, Sampled, sampling_for
from strategies.stops import StopKind, stop_kind
from verifiers.confidence import GroupConfidence, lowest_group_confidence, token_confidence

__all__ = [
    "Online",
    "Trace",
    "percentile",
    "think",
]

Weigh = Callable[[Sequence[Sampled]], Awaitable[list[float]]]
Status = Literal["kept", "below", "stopped", "cancelled"]


@dataclass
class Trace:
    """One sample drawn: where it came from, its lowest group confidence, and its fate."""

    sample: int
    phase: Literal["warmup", "stream"]
    text: str
    answer: str | None
    tokens: int
    confidence: float
    status: Status

    def for_trace(self) -> dict[str, Any]:
        """The trace entry a client sees."""
        return {
            "sample": self.sample,
            "phase": self.phase,
            "status": self.status,
            "lowest_group_confidence": round(self.confidence, 6),
            "tokens": self.tokens,
            "answer": self.answer,
            "text": self.text,
        }


@dataclass
class Online:
    """A finished run: every trace drawn, the threshold, and the traces that vote with their
    weights (empty when votes are counted)."""

    requested: int
    threshold: float
    rule: DeepConf
    traces: list[Trace] = field(default_factory=list)
    voters: list[Sampled] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    settled: str | None = None
    budget: str | None = None

    @property
    def stopped_early(self) -> str | None:
        """Why fewer than the requested traces were written out, if they were."""
        stopped = sum(t.status == "stopped" for t in self.traces)
        parts = []
        if stopped:
            streamed = sum(t.phase == "stream" for t in self.traces)
            parts.append(
                f"stopped {stopped} of {streamed} streamed traces below confidence "
                f"{self.threshold:.3f}"
            )
        if self.settled:
            parts.append(self.settled)
        if self.budget:
            parts.append(self.budget)
        return f"deepconf: {'; '.join(parts)}" if parts else None

    @property
    def stop(self) -> StopKind:
        """Why no more traces were started: the vote settled, a budget, or all were drawn."""
        if self.settled:
            return "settled"
        if self.budget:
            return stop_kind(self.budget)
        return "all_drawn"

    @property
    def tokens_saved(self) -> int:
        """The requested traces at the mean cost of a whole one, less what was generated."""
        whole = [t.tokens for t in self.traces if t.status in ("kept", "below")]
        spent = sum(t.tokens for t in self.traces)
        if not whole:
            return 0
        return max(0, round(self.requested * sum(whole) / len(whole)) - spent)

    def annotate(self, result: StrategyResult) -> StrategyResult:
        """The voting strategy's result, with every trace drawn and what stopped early."""
        trace = dict(result.trace or {})
        trace["samples"] = {
            "requested": self.requested,
            "drawn": len(self.traces),
            "voted": len(self.voters),
            "tokens_saved": self.tokens_saved,
        }
        trace["deepconf"] = {
            "threshold": round(self.threshold, 6),
            "keep": self.rule.kept_percent,
            "window": self.rule.window,
            "top_logprobs": self.rule.top_logprobs,
            # In the order they were started, whatever order they finished in.
            "traces": [t.for_trace() for t in sorted(self.traces, key=lambda t: t.sample)],
        }
        if self.stopped_early:
            trace["stopped_early"] = self.stopped_early
        # The vote saw the voters only; agreement is a share of every trace drawn.
        agreement = result.agreement
        if agreement is not None and self.traces:
            agreement *= len(self.voters) / len(self.traces)
        return dataclasses.replace(
            result,
            trace=trace,
            stopped_early=self.stopped_early,
            tokens_saved=self.tokens_saved,
            agreement=agreement,
            drawn=len(self.traces),
            allowed=self.requested,
            stop=self.stop,
        )


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile of `values`, interpolating linearly between the closest ranks."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def think(
    ctx: StrategyContext,
    request: StrategyRequest,
    params: CandidateParams,
    rule: DeepConf,
    weigh: Weigh | None = None,
    logprobs: int | None = None,
) -> Online:
    """Run DeepConf online for `params.n` traces; `weigh` scores voters (counted without it),
    `logprobs` is what it needs per token beyond the rule's own."""
    total = effort_n(request, params.n, ctx.limits.max_n)
    run = _Run(ctx, request, params, rule, weigh, logprobs, Extraction.of(request, params))

    # 1. Warm-up: one call, of as many traces as a token budget affords at `max_tokens` each
    # (at least one, cut to the tokens left).
    warmup = min(rule.warmup, total)
    first = run.sampling(warmup, offset=0)
    left = ctx.budget.tokens_left()
    if left is not None and left < warmup * first.max_tokens:
        warmup = max(1, left // first.max_tokens)
        first = run.sampling(warmup, offset=0, cap=max(1, left))
    with ctx.span("wave", phase="warmup", size=warmup):
        generation = await ctx.generate(request.prompt, first)
    confidences = [
        lowest_group_confidence(c.logprobs or (), rule.window) for c in generation.completions
    ]
    # 2. The threshold, and the warm-up traces that reach it.
    run.online = Online(total, percentile(confidences, 100.0 - rule.kept_percent), rule)
    pairs = zip(generation.completions, confidences, strict=True)
    kept = [
        run.finished(i, "warmup", c, confidence, cut=None)
        for i, (c, confidence) in enumerate(pairs)
    ]
    await run.vote([c for c in kept if c is not None])
    run.prompt_tokens = generation.prompt_tokens

    # 3-4. The rest, streamed and stopped below the threshold, until a consensus.
    gate = asyncio.Semaphore(rule.parallel or max(1, total - warmup))
    with ctx.span("wave", phase="online", size=total - warmup):
        async with asyncio.TaskGroup() as group:
            for i in range(warmup, total):
                group.create_task(run.stream(i, gate))
    return run.online


@dataclass
class _Run:
    """One run's shared state: what every streamed trace checks and adds to."""

    ctx: StrategyContext
    request: StrategyRequest
    params: CandidateParams
    rule: DeepConf
    weigh: Weigh | None
    # The log-probabilities per token `weigh` needs beyond the rule's own.
    logprobs: int | None
    extraction: Extraction
    online: Online = field(init=False)
    prompt_tokens: int = 0
    # Tokens the traces in flight are expected to take, at the cost of the traces so far.
    reserved: float = 0.0

    def sampling(self, n: int, offset: int, cap: int | None = None) -> SamplingParams:
        """`n` traces as the request samples them, with the top log-probabilities the rule (and
        `weigh`) needs; a seeded request's `offset`-th trace gets a seed of its own; `cap`
        bounds each trace's tokens."""
        wanted = (self.rule.top_logprobs, self.logprobs)
        return sampling_for(self.request, self.params, n, offset, wanted, cap)

    async def stream(self, sample: int, gate: asyncio.Semaphore) -> None:
        """3. One trace in a backend request of its own, cut as soon as it is unconfident or
        the vote is settled."""
        async with gate:
            online = self.online
            if online.settled or online.budget:
                return
            budget = self.ctx.budget
            if budget.limited and (reason := budget.spent() or self._unaffordable()) is not None:
                online.budget = online.budget or reason
                return
            each = self._cost()
            self.reserved += each
            try:
                await self._stream(sample, online)
            finally:
                self.reserved -= each

    def _cost(self) -> float:
        """What a trace takes: the mean of those drawn so far."""
        traces = self.online.traces
        return sum(t.tokens for t in traces) / len(traces) if traces else 0.0

    def _unaffordable(self) -> str | None:
        """Why a token budget, less what the traces in flight will take, cannot afford one
        more trace; None if it can (or none bounds tokens)."""
        left = self.ctx.budget.tokens_left()
        each = self._cost()
        if left is None or left - self.reserved >= max(1.0, each):
            return None
        return (
            f"token budget reached ({left} tokens left, {self.reserved:.0f} of them for the "
            f"traces in flight; a trace takes about {each:.0f})"
        )

    async def _stream(self, sample: int, online: Online) -> None:
        """The trace itself: streamed, and cut below the threshold or once settled."""
        group = GroupConfidence(self.rule.window)
        why: list[Status] = []

        def stop(delta: StreamDelta) -> bool:
            for token in delta.logprobs or ():
                group.add(token_confidence(token))
            if group.full and group.lowest < online.threshold:
                why.append("stopped")
            elif online.settled:
                why.append("cancelled")
            return bool(why)

        generation, cut = await self.ctx.generate_until(
            self.request.prompt, self.sampling(1, offset=sample), stop, self.prompt_tokens
        )
        completion = generation.completions[0]
        kept = self.finished(
            sample, "stream", completion, group.lowest, cut=why[0] if cut else None
        )
        if kept is not None:
            await self.vote([kept])

    def finished(
        self,
        sample: int,
        phase: Literal["warmup", "stream"],
        completion: Completion,
        confidence: float,
        cut: Status | None,
    ) -> Sampled | None:
        """Record a trace; a whole one that reaches the threshold is a voter."""
        online = self.online
        sampled = self.extraction.sampled(completion)
        status: Status = cut or ("kept" if confidence >= online.threshold else "below")
        online.traces.append(
            Trace(sample, phase, sampled.text, sampled.answer, sampled.tokens, confidence, status)
        )
        return sampled if status == "kept" else None

    async def vote(self, voters: list[Sampled]) -> None:
        """5. New voters join the vote (weighed in one call), which 4. may settle: once the
        leading answer holds `consensus` of the weight."""
        online, tau = self.online, self.rule.consensus
        weights = await self.weigh(voters) if self.weigh is not None and voters else []
        # Both lists grow together, with no await between: they stay aligned.
        online.voters += voters
        online.weights += weights
        if tau is None or online.settled:
            return
        votes = await rank_groups(
            online.voters, online.weights if self.weigh else None, self.ctx.equivalence
        )
        weight = sum(v.weight for v in votes)
        if votes and weight > 0 and votes[0].weight / weight >= tau:
            online.settled = (
                f"{votes[0].weight / weight:.0%} of the vote agreed after {len(online.traces)} "
                f"of {online.requested} traces (consensus {tau:g})"
            )
