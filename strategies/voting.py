"""Choosing among sampled candidates: the majority vote, and the strategies that choose with a
verifier (`VerifiedSelection`).

`VerifiedSelection` is the shape of the strategies that pick with a verifier (best-of-N,
weighted vote): sample N candidates in one backend call, score them all in one verifier call,
then choose. If the verifier fails or times out, the request fails with a 502, unless its
`on_verifier_error` is `vote`: then the same candidates are majority-voted (`vote_instead`, the
one fallback, which `auto` takes too), and the response says so in `reasoning_fallback`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from strategies.answer_groups import Vote, rank_groups
from strategies.base import StrategyParams, StrategyRequest, StrategyResult
from strategies.budget import ReadRefused
from strategies.candidate_params import VerifiedParams
from strategies.context import StrategyContext
from strategies.results import result_of
from strategies.sampling import Sampled, Scored
from strategies.stops import StopKind, stop_kind
from strategies.waves import sample_and_verify
from verifiers.base import VerifierError

__all__ = ["VerifiedSelection", "vote", "vote_instead"]


async def vote(
    ctx: StrategyContext,
    request: StrategyRequest,
    candidates: Sequence[Sampled],
    strategy: str,
    fallback: str | None = None,
    stopped_early: str | None = None,
    requested: int | None = None,
    votes: Sequence[Vote] | None = None,
    stop: StopKind | None = None,
) -> StrategyResult:
    """Majority vote over sampled candidates: the first candidate of each of the `n` largest
    answer groups; with no answer to vote on, the first candidate. `votes` are the candidates'
    answer groups, when the caller has ranked them already; `stop` why the drawing stopped."""
    if votes is None:
        votes = await rank_groups(candidates, None, ctx.equivalence)
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
        stop=stop,
    )


async def vote_instead(
    ctx: StrategyContext,
    request: StrategyRequest,
    candidates: Sequence[Sampled],
    strategy: str,
    verifier: str,
    error: VerifierError,
    requested: int | None = None,
) -> StrategyResult:
    """What answers when `verifier` failed and the request allows it: a majority vote over the
    same candidates, which the response reports as its fallback (the trace under `strategy`)."""
    stop: StopKind | None = None
    if isinstance(error, ReadRefused):
        reason = f"{error}; answered by majority vote"
        stop = stop_kind(str(error))
    else:
        reason = f"verifier {verifier!r} failed ({error}); answered by majority vote"
    return await vote(ctx, request, candidates, strategy, reason, requested=requested, stop=stop)


class VerifiedSelection(ABC):
    """A strategy that samples N candidates, scores them with a verifier, and `choose`s."""

    name: ClassVar[str]
    takes_tools: ClassVar[bool] = True
    takes_json: ClassVar[bool] = True
    takes_thinking: ClassVar[bool] = True
    params_model: ClassVar[type[StrategyParams]]

    async def run(
        self, request: StrategyRequest, params: VerifiedParams, ctx: StrategyContext
    ) -> StrategyResult:
        scored = await sample_and_verify(
            ctx, request, params, lambda so_far, left: self.settled(ctx, so_far, params, left)
        )
        if scored.error is not None:
            # Majority vote answers, and the trace says so under its registered name.
            return await vote_instead(
                ctx,
                request,
                scored.candidates,
                "majority_vote",
                params.verifier,
                scored.error,
                scored.requested,
            )
        chosen, votes = await self.choose(ctx, scored, request.sampling.n, params.return_trace)
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
            stop=scored.stop,
        )

    async def settled(
        self, ctx: StrategyContext, scored: Scored, params: VerifiedParams, left: int
    ) -> bool:
        """Whether the candidates so far settle the choice (with `early_stop`; `left` more
        could be drawn)."""
        return False

    @abstractmethod
    async def choose(
        self, ctx: StrategyContext, scored: Scored, n: int, with_trace: bool
    ) -> tuple[list[int], list[Vote]]:
        """The `n` candidates that answer, and the answer groups' votes for the trace (which
        may be left out when no trace was asked for and the choice needs none)."""
