"""`weighted_vote`: self-consistency with each vote weighted by a verifier's score.

As in the weighted best-of-N of Li et al., "Making Large Language Models Better Reasoners
with Step-Aware Verifier" (2023), and the test-time compute scaling study of Snell et al.
(2024):

1. Sample N candidates in one backend call, with the log-probabilities the verifier needs.
2. Score them all in one verifier call; a process reward model's step scores reduce to one by
   `aggregation`.
3. Group equivalent answers; a group's weight is the sum of its candidates' scores.
4. Answer with the highest-scored candidate of the heaviest group (ties: earliest first).
   A request with `n` > 1 gets one candidate from each of the `n` heaviest groups; if no
   candidate has an answer, the highest-scored candidate answers.

Steps 1 and 2, and what a failing verifier does, are `VerifiedSelection`'s. With
`early_stop`, steps 1-2 repeat in waves until the weighted totals settle the vote
(`strategies.early_stop`).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from strategies.candidates import Scored, VerifiedParams, VerifiedSelection, Vote, rank_groups
from strategies.early_stop import EarlyStop, settled
from strategies.ranking import ranked

__all__ = ["WeightedVote", "WeightedVoteParams"]


class WeightedVoteParams(VerifiedParams):
    """Params of `weighted_vote`."""

    early_stop: EarlyStop | None = Field(
        default=None,
        description="Waves until the weighted vote is settled (`strategies.early_stop`).",
    )


class WeightedVote(VerifiedSelection):
    """The answer with the most verifier-weighted votes among N samples."""

    name: ClassVar[str] = "weighted_vote"
    params_model: ClassVar[type[BaseModel]] = WeightedVoteParams

    async def settled(self, scored: Scored, params: VerifiedParams, left: int) -> bool:
        rule = params.early_stop
        assert isinstance(rule, EarlyStop)
        votes = await rank_groups(scored.candidates, scored.values)
        voted = sum(len(v.members) for v in votes)
        # A candidate still to come can add at most the largest weight seen so far.
        most = max(scored.values, default=1.0)
        return settled(rule, [v.weight for v in votes], voted, left, most)

    async def choose(
        self, scored: Scored, n: int, with_trace: bool
    ) -> tuple[list[int], list[Vote]]:
        # 3. Weigh the answer groups.
        weights = scored.values
        votes = await rank_groups(scored.candidates, weights)
        # 4. Each group's best-scored candidate speaks for it.
        chosen = [ranked(v.members, key=weights.__getitem__)[0] for v in votes][:n]
        return chosen or ranked(range(len(weights)), key=weights.__getitem__)[:1], votes
