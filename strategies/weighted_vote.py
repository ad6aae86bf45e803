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
(`strategies.early_stop`). With `early_stop.method` `deepconf` (Fu et al., "Deep Think with
Confidence", 2025), step 1 is DeepConf online (`strategies.deepconf`): a warm-up call, then one
streamed call per candidate, stopped as soon as it grows unconfident; only the candidates that
reached the threshold are scored, by a `confidence` verifier (which costs no model call), and
vote.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import ValidationInfo, field_validator

from strategies.answer_groups import Vote, rank_groups
from strategies.base import ParamsContext, StrategyParams, StrategyRequest, StrategyResult
from strategies.candidate_params import VerifiedParams, VoteStopParams
from strategies.context import StrategyContext
from strategies.deepconf import think
from strategies.early_stop import DeepConf, EarlyStop, settled
from strategies.ranking import ranked
from strategies.results import result_of
from strategies.sampling import Sampled, Scored, score
from strategies.voting import VerifiedSelection
from verifiers.base import CandidateScore

__all__ = ["WeightedVote", "WeightedVoteParams"]


# The votes' early_stop replaces the base's waves: DeepConf streams its candidates instead of
# drawing waves of them (`WeightedVote.run`).
class WeightedVoteParams(VoteStopParams, VerifiedParams):  # type: ignore[misc]
    """Params of `weighted_vote`."""

    @field_validator("early_stop")
    @classmethod
    def _deepconf_weighs_by_confidence(
        cls, rule: EarlyStop | DeepConf | None, info: ValidationInfo
    ) -> EarlyStop | DeepConf | None:
        verifier = info.data.get("verifier")
        context = ParamsContext.of(info.context)
        if isinstance(rule, DeepConf) and verifier and verifier not in context.logprob_verifiers:
            raise ValueError(
                "weighted_vote with early_stop deepconf weighs its votes by the traces' own "
                f"confidence: verifier {verifier!r} does not score token log-probabilities; "
                "use a confidence verifier"
            )
        return rule


class WeightedVote(VerifiedSelection):
    """The answer with the most verifier-weighted votes among N samples."""

    name: ClassVar[str] = "weighted_vote"
    params_model: ClassVar[type[StrategyParams]] = WeightedVoteParams

    async def run(
        self, request: StrategyRequest, params: VerifiedParams, ctx: StrategyContext
    ) -> StrategyResult:
        rule = params.early_stop
        if not isinstance(rule, DeepConf):
            return await super().run(request, params, ctx)

        async def weigh(voters: Sequence[Sampled]) -> list[float]:
            # 2. Only candidates that reached DeepConf's threshold are scored.
            scores = await score(ctx, request, params.verifier, voters)
            return [s.aggregated(params.aggregation) for s in scores]

        needs = ctx.verifiers[params.verifier].logprobs
        online = await think(ctx, request, params, rule, weigh, needs)
        values = online.weights
        scored = Scored(online.voters, tuple(CandidateScore(v) for v in values), values)
        chosen, votes = await self.choose(ctx, scored, request.sampling.n, params.return_trace)
        result = result_of(
            ctx, request, self.name, online.voters, chosen, scored=scored, votes=votes
        )
        return online.annotate(result)

    async def settled(
        self, ctx: StrategyContext, scored: Scored, params: VerifiedParams, left: int
    ) -> bool:
        rule = params.early_stop
        assert isinstance(rule, EarlyStop)
        votes = await rank_groups(scored.candidates, scored.values, ctx.equivalence)
        voted = sum(len(v.members) for v in votes)
        # A candidate still to come can add at most the largest weight seen so far.
        most = max(scored.values, default=1.0)
        return settled(rule, [v.weight for v in votes], voted, left, most)

    async def choose(
        self, ctx: StrategyContext, scored: Scored, n: int, with_trace: bool
    ) -> tuple[list[int], list[Vote]]:
        # 3. Weigh the answer groups.
        weights = scored.values
        votes = await rank_groups(scored.candidates, weights, ctx.equivalence)
        # 4. Each group's best-scored candidate speaks for it.
        chosen = [ranked(v.members, key=weights.__getitem__)[0] for v in votes][:n]
        return chosen or ranked(range(len(weights)), key=weights.__getitem__)[:1], votes
