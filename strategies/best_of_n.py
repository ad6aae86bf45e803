"""`best_of_n`: sample N candidates, answer with the one the verifier scores highest.

As in Cobbe et al., "Training Verifiers to Solve Math Word Problems" (2021), and Lightman
et al., "Let's Verify Step by Step" (2023) for process reward models:

1. Sample N candidates in one backend call, with the log-probabilities the verifier needs.
2. Score them all in one verifier call; a process reward model's step scores reduce to one by
   `aggregation` (`last`, `min`, `prod` or `mean`).
3. Answer with the highest-scored candidate; among equal scores, the earliest. A request with
   `n` > 1 gets the `n` highest-scored candidates.

Steps 1 and 2, and what a failing verifier does, are `VerifiedSelection`'s. With
`early_stop: {"method": "score", "threshold": t}`, steps 1-2 repeat in waves until a candidate
scores at least `t`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from strategies.answer_groups import Vote, rank_groups
from strategies.base import StrategyParams
from strategies.candidate_params import VerifiedParams
from strategies.context import StrategyContext
from strategies.early_stop import ScoreStop
from strategies.ranking import ranked
from strategies.sampling import Scored
from strategies.voting import VerifiedSelection

__all__ = ["BestOfN", "BestOfNParams"]


class BestOfNParams(VerifiedParams):
    """Params of `best_of_n`."""

    early_stop: ScoreStop | None = Field(
        default=None, description="Waves until a candidate scores at least `threshold`."
    )


class BestOfN(VerifiedSelection):
    """The verifier's favourite among N samples."""

    name: ClassVar[str] = "best_of_n"
    params_model: ClassVar[type[StrategyParams]] = BestOfNParams

    async def settled(
        self, ctx: StrategyContext, scored: Scored, params: VerifiedParams, left: int
    ) -> bool:
        rule = params.early_stop
        assert isinstance(rule, ScoreStop)
        return max(scored.values, default=float("-inf")) >= rule.threshold

    async def choose(
        self, ctx: StrategyContext, scored: Scored, n: int, with_trace: bool
    ) -> tuple[list[int], list[Vote]]:
        # 3. The highest-scored.
        values = scored.values
        chosen = ranked(range(len(values)), key=values.__getitem__)[:n]
        # The votes only show in the trace, so the math-verify grouping behind them runs
        # only when one was asked for.
        votes = await rank_groups(scored.candidates, values, ctx.equivalence) if with_trace else []
        return chosen, votes
