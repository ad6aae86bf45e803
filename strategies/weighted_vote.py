"""`weighted_vote`: self-consistency with each vote weighted by a verifier's score.

As in the weighted best-of-N of Li et al., "Making Large Language Models Better Reasoners
with Step-Aware Verifier" (2023), and the test-time compute scaling study of Snell et al.
(2024):

1. Sample N candidates in one backend call (with the log-probabilities the verifier needs).
2. Score every candidate with the named verifier in one call; a process reward model's step
   scores reduce to one score by `aggregation`.
3. Group equivalent answers; a group's weight is the sum of its candidates' scores.
4. Answer with the highest-scored candidate of the heaviest group (ties: earliest first).
   A request with `n` > 1 gets one candidate from each of the `n` heaviest groups.

If the verifier fails or times out, the request fails with a 502, unless
`on_verifier_error` is `vote`: then the same candidates are majority-voted and the response
says so in `reasoning_fallback`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from strategies.base import StrategyContext, StrategyRequest, StrategyResult
from strategies.candidates import VerifiedParams, rank_groups, result_of, sample, verify
from strategies.majority_vote import majority_vote

__all__ = ["WeightedVote", "WeightedVoteParams"]


class WeightedVoteParams(VerifiedParams):
    """Params of `weighted_vote`."""


class WeightedVote:
    """The answer with the most verifier-weighted votes among N samples."""

    name: ClassVar[str] = "weighted_vote"
    params_model: ClassVar[type[BaseModel]] = WeightedVoteParams

    async def run(
        self, request: StrategyRequest, params: WeightedVoteParams, ctx: StrategyContext
    ) -> StrategyResult:
        needs = ctx.verifiers[params.verifier].logprobs
        candidates = await sample(ctx, request, params, logprobs=needs)
        scores, failure = await verify(ctx, request, params, candidates)
        if scores is None:
            return await majority_vote(ctx, request, candidates, fallback=failure)
        weights = [s.aggregated(params.aggregation) for s in scores]
        votes = await rank_groups(candidates, weights)
        # Within a group, its best-scored candidate speaks for it (the earliest among equals).
        chosen = [max(v.members, key=lambda i: (weights[i], -i)) for v in votes]
        return result_of(
            ctx,
            request,
            self.name,
            candidates,
            chosen[: request.sampling.n] or [_best(weights)],
            scores=scores,
            aggregation=params.aggregation,
            votes=votes,
        )


def _best(weights: list[float]) -> int:
    """The highest-weighted candidate (the earliest among equals), when no answer was voted."""
    return max(range(len(weights)), key=lambda i: (weights[i], -i))
