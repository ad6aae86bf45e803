"""`best_of_n`: sample N candidates, answer with the one the verifier scores highest.

As in Cobbe et al., "Training Verifiers to Solve Math Word Problems" (2021), and Lightman
et al., "Let's Verify Step by Step" (2023) for process reward models:

1. Sample N candidates in one backend call (with the log-probabilities the verifier needs).
2. Score every candidate with the named verifier in one call; a process reward model's step
   scores reduce to one score by `aggregation` (`last`, `min`, `prod` or `mean`).
3. Answer with the highest-scored candidate; among equal scores, the earliest. A request with
   `n` > 1 gets the `n` highest-scored candidates.

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

__all__ = ["BestOfN", "BestOfNParams"]


class BestOfNParams(VerifiedParams):
    """Params of `best_of_n`."""


class BestOfN:
    """The verifier's favourite among N samples."""

    name: ClassVar[str] = "best_of_n"
    params_model: ClassVar[type[BaseModel]] = BestOfNParams

    async def run(
        self, request: StrategyRequest, params: BestOfNParams, ctx: StrategyContext
    ) -> StrategyResult:
        needs = ctx.verifiers[params.verifier].logprobs
        candidates = await sample(ctx, request, params, logprobs=needs)
        scores, failure = await verify(ctx, request, params, candidates)
        if scores is None:
            return await majority_vote(ctx, request, candidates, fallback=failure)
        values = [s.aggregated(params.aggregation) for s in scores]
        ranked = sorted(range(len(candidates)), key=lambda i: -values[i])
        # The trace's votes show how the answers fared; they do not decide here, so the
        # math-verify grouping behind them runs only when a trace was asked for.
        votes = await rank_groups(candidates, values) if params.return_trace else []
        return result_of(
            ctx,
            request,
            self.name,
            candidates,
            ranked[: request.sampling.n],
            scores=scores,
            aggregation=params.aggregation,
            votes=votes,
        )
