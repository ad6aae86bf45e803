"""Drawing candidates in waves: until a rule settles the vote, a budget is spent, or all N are
drawn; with a verifier, each wave scored in one call."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from strategies.answer_groups import Vote, rank_groups
from strategies.base import StrategyRequest, estimated_tokens
from strategies.budget import ReadRefused
from strategies.candidate_params import CandidateParams, VerifiedParams
from strategies.context import StrategyContext
from strategies.early_stop import EarlyStop, Waves, settled
from strategies.effort import effort_n
from strategies.results import report_scores, report_votes
from strategies.sampling import Sampled, Scored, question_of, sample, score
from strategies.stops import StopKind, stop_kind
from verifiers.base import CandidateScore, VerifierError

__all__ = ["TIMED_WAVE", "Draws", "sample_and_verify", "sample_until_settled"]


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
        with ctx.span("wave", offset=wave[0], size=wave[1]):
            draws.drawn += await sample(ctx, request, params, wave=wave, cap=draws.cap)
            asked = rule is not None and draws.may_stop()
            # Ranked once per wave, for the rule and the progress line alike, and kept for
            # the vote.
            draws.votes = None
            if asked or ctx.is_reporting_progress:
                draws.votes = await rank_groups(draws.drawn, None, ctx.equivalence)
                await report_votes(ctx, draws.votes, len(draws.drawn), draws.total)
            if asked:
                assert rule is not None and draws.votes is not None
                voted = sum(len(v.members) for v in draws.votes)
                if settled(rule, [v.weight for v in draws.votes], voted, draws.left):
                    draws.stopped, draws.stop = draws.settled(), "settled"
        if draws.stopped:
            break
    return draws


# Candidates per call when only a time budget asks for waves: a check of the clock every wave.
TIMED_WAVE = 4


@dataclass
class Draws:
    """Candidates drawn so far towards a requested `total`, and how the next wave is sized: all
    that are left at once without a rule or budget; a rule's wave; never more than the budget's
    tokens left afford at the cost of the candidates so far (before the first, `max_tokens`
    each, and what a verifier reads of each, `reads_each`, when one will). The first candidate
    is always drawn, capped (`cap`) to the tokens left."""

    ctx: StrategyContext
    rule: Waves | None
    total: int
    max_tokens: int
    drawn: list[Sampled]
    start: tuple[int, int]  # the generated and verifier tokens spent before the first wave
    reads_each: int = 0
    cap: int | None = None
    stopped: str | None = None
    # Why the draws stopped, as a closed set (set with `stopped`; all_drawn by default).
    stop: StopKind = "all_drawn"
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
        # A verifier reads each candidate with the question (`StrategyContext.verify`).
        reads = estimated_tokens(len(question_of(request.prompt))) + max_tokens
        reads_each = reads if params.is_verified else 0
        start = (ctx.usage.completion_tokens, ctx.usage.verifier_tokens)
        return cls(ctx, rule, total, max_tokens, [], start, reads_each)

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
                self.stopped, self.stop = reason, stop_kind(reason)
                return None
            if budget.deadline is not None and self.rule is None:
                size = min(size, TIMED_WAVE)
            left = budget.tokens_left()
            if left is not None:
                each = self._each(drawn)
                size = min(size, int(left // max(1.0, each)))
                if size == 0 and drawn:
                    self.stopped = (
                        f"token budget reached ({left} tokens left; a candidate takes about "
                        f"{each:.0f})"
                    )
                    self.stop = "budget"
                    return None
                if size == 0:
                    size, self.cap = 1, max(1, self._cap(left))
        return drawn, size

    def _each(self, drawn: int) -> float:
        """What a candidate costs, generated and read: by `max_tokens` before any is drawn,
        then by what the drawn ones took (their reading estimated as the verifier's check
        does, or as it turned out, whichever is more)."""
        if not drawn:
            return self.max_tokens + self.reads_each
        usage, (generated, read) = self.ctx.usage, self.start
        generated_each = (usage.completion_tokens - generated) / drawn
        if not self.reads_each:
            return generated_each
        estimate = self.reads_each - self.max_tokens + generated_each
        return generated_each + max(estimate, (usage.verifier_tokens - read) / drawn)

    def _cap(self, left: int) -> int:
        """The tokens one candidate may take for it and its reading to fit in `left`."""
        if not self.reads_each:
            return left
        question = self.reads_each - self.max_tokens
        return (left - question) // 2


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
        with ctx.span("wave", offset=wave[0], size=wave[1]):
            new = await sample(ctx, request, params, logprobs=needs, wave=wave, cap=draws.cap)
            draws.drawn += new
            try:
                scores += await score(ctx, request, params.verifier, new)
            except VerifierError as exc:
                # A call the budget refused is no failure: the vote answers, whatever was asked.
                if params.on_verifier_error == "error" and not isinstance(exc, ReadRefused):
                    raise
                return Scored(draws.drawn, None, [], error=exc, requested=draws.total)
        scored = Scored(
            draws.drawn,
            tuple(scores),
            [s.aggregated(params.aggregation) for s in scores],
            requested=draws.total,
        )
        await report_scores(ctx, scored)
        if stop is not None and draws.may_stop() and await stop(scored, draws.left):
            return dataclasses.replace(scored, stopped_early=draws.settled(), stop="settled")
    return dataclasses.replace(scored, stopped_early=draws.stopped, stop=draws.stop)
