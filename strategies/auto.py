"""`auto`: the server chooses how much to spend on each request.

After the adaptive sampling of Aggarwal et al., "Let's Sample Step by Step: Adaptive-Consistency
for Efficient Reasoning and Coding with LLMs" (EMNLP 2023), and the compute-optimal scaling of
Snell et al., "Scaling LLM Test-Time Compute Optimally can be More Effective than Scaling Model
Parameters" (2024): spend little where the model agrees with itself, more where it does not, and
a verifier only where voting alone is unsure. The policy is data (`POLICY`), a list of stages:

1. Draw the stage's new samples in one backend call (its wave starts where the last one ended,
   so its seed does too, and an early stop draws exactly the first samples of a longer run).
2. Group the answers, as `majority_vote` does.
3. If the leading answer has the stage's `stop_at` votes, answer with it: the model agrees.
4. Otherwise go on to the next stage. The last stage answers by majority vote over all samples,
   or, when a PRM verifier is configured, by a PRM-weighted vote (`weighted_vote`'s choice) over
   all of them, scored in one verifier call; if that call fails, the majority vote answers and
   `reasoning_fallback` says so.

The budget every strategy takes is checked before each stage after the first. The trace says
which path was taken: each stage's samples, its votes, and why the run stopped where it did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from strategies.answer_groups import Vote, rank_groups
from strategies.base import MaxSpend, ParamsContext, StrategyParams, StrategyRequest, StrategyResult
from strategies.candidate_params import CandidateParams
from strategies.context import StrategyContext
from strategies.limits import Limits
from strategies.results import result_of
from strategies.sampling import Sampled, Scored, sample, score
from strategies.stops import StopKind, stop_kind
from strategies.voting import vote, vote_instead
from strategies.weighted_vote import WeightedVote
from verifiers.base import Aggregation, VerifierError

__all__ = ["POLICY", "Auto", "AutoParams", "Stage", "fitted", "stop_at_stage"]


class Stage(BaseModel):
    """One stage of the policy: draw up to `samples` in all; stop if `stop_at` agree."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int = Field(ge=1, description="Samples drawn by the end of this stage, in all.")
    stop_at: int | None = Field(
        default=None,
        ge=1,
        description="Answer now if the leading answer has this many votes (last stage: none).",
    )


# Tuned on bench.accuracy's replay of stored vLLM samples (docs/benchmarks.md): the cheapest
# policy of its grid that met all of its accuracy and token targets. Stage 1 escalates only
# when no answer repeats among 4 samples.
POLICY: tuple[Stage, ...] = (
    Stage(samples=4, stop_at=2),
    Stage(samples=8, stop_at=5),
    Stage(samples=16),
)


class AutoParams(CandidateParams):
    """Params of `auto`: the sampling params of the votes, a policy, and the escalation's
    verifier. `n` is the policy's to choose, so it is not taken; the default policy is cut to
    the server's `max_n` (`fitted`), a policy given must fit it."""

    policy: tuple[Stage, ...] = Field(
        default=POLICY, description="The stages, in order; default the tuned policy."
    )
    verifier: str | None = Field(
        default=None,
        description="The verifier of the last stage's weighted vote; default a configured PRM.",
    )
    aggregation: Aggregation = Field(
        default=Aggregation.LAST, description="How the PRM's step scores reduce to one."
    )

    @property
    def is_verified(self) -> bool:
        return self.verifier is not None

    def max_spend(self, request: StrategyRequest, limits: Limits) -> MaxSpend:
        """Every stage of the policy drawn: its last stage's samples."""
        return self.spend_for(request, self.policy[-1].samples, "reasoning_params.policy")

    @model_validator(mode="after")
    def _valid(self, info: ValidationInfo) -> AutoParams:
        if self.n is not None:
            raise ValueError("auto chooses how many samples to draw; give policy instead of n")
        context = ParamsContext.of(info.context)
        update: dict[str, object] = {}
        if "policy" in self.model_fields_set:
            _check_policy(self.policy, context.limits.max_n)
        else:
            update["policy"] = fitted(self.policy, context.limits.max_n)
        if self.verifier is not None:
            context.require_verifier(self.verifier)
        elif context.prms:
            # The first configured PRM by name, so that the choice does not depend on order.
            update["verifier"] = min(context.prms)
        return self.model_copy(update=update) if update else self


def fitted(policy: Sequence[Stage], max_n: int) -> tuple[Stage, ...]:
    """The default policy on a server that allows fewer samples: the stages below `max_n`,
    then a last one of `max_n`."""
    last = Stage(samples=min(max_n, policy[-1].samples))
    return (*(s for s in policy if s.samples < last.samples), last)


def _check_policy(policy: Sequence[Stage], max_n: int) -> None:
    if not policy:
        raise ValueError("policy needs at least one stage")
    drawn = 0
    for index, stage in enumerate(policy):
        if stage.samples <= drawn:
            raise ValueError(f"policy stage {index} must draw more than {drawn} samples in all")
        if stage.stop_at is not None and stage.stop_at > stage.samples:
            raise ValueError(f"policy stage {index} stops at more votes than it has samples")
        drawn = stage.samples
    if drawn > max_n:
        raise ValueError(f"policy draws {drawn} samples; this server allows at most {max_n}")


def stop_at_stage(stage: Stage, is_last: bool, votes: Sequence[Vote]) -> bool:
    """Whether the policy answers after `stage`: the leader has the votes it asks for."""
    if is_last or stage.stop_at is None or not votes:
        return False
    return votes[0].weight >= stage.stop_at


@dataclasses.dataclass(frozen=True)
class _StageRecord:
    """What a stage saw: the samples drawn by its end and their votes."""

    samples: int
    votes: dict[str, float]
    stop_at: int | None


class Auto:
    """Stages of majority voting that stop once the model agrees; a PRM decides the rest."""

    name: ClassVar[str] = "auto"
    takes_tools: ClassVar[bool] = False
    takes_json: ClassVar[bool] = True
    takes_thinking: ClassVar[bool] = False
    params_model: ClassVar[type[StrategyParams]] = AutoParams

    async def run(
        self, request: StrategyRequest, params: AutoParams, ctx: StrategyContext
    ) -> StrategyResult:
        drawn: list[Sampled] = []
        votes: list[Vote] | None = None
        stages: list[_StageRecord] = []
        stopped: str | None = None
        stop: StopKind | None = None
        path = "majority vote"
        for index, stage in enumerate(params.policy):
            if drawn and (reason := ctx.budget.spent()) is not None:
                stopped, path = reason, f"budget spent after stage {index}"
                stop = stop_kind(reason)
                break
            # 1. This stage's new samples, in one call, seeded after the ones before.
            wave = (len(drawn), stage.samples - len(drawn))
            with ctx.span("stage", number=index + 1, samples=stage.samples):
                drawn += await sample(ctx, request, params, wave=wave)
                # 2. Group and count.
                votes = await rank_groups(drawn, None, ctx.equivalence)
            tally = {v.answer: v.weight for v in votes}
            stages.append(_StageRecord(len(drawn), tally, stage.stop_at))
            # 3. Stop once the leader has the votes the stage asks for.
            if stop_at_stage(stage, index == len(params.policy) - 1, votes):
                stopped = (
                    f"auto: {votes[0].weight:g} of {len(drawn)} samples agree "
                    f"(stage {index + 1} stops at {stage.stop_at})"
                )
                path = f"stopped at stage {index + 1}"
                stop = "settled"
                break
        requested = params.policy[-1].samples
        if stopped is None and params.verifier is not None:
            # 4. The vote is still open after every stage: the PRM weighs every sample.
            result = await self._weighted(ctx, request, params, drawn, requested)
            failed = result.fallback is not None
            path = (
                "majority vote (the verifier failed)"
                if failed
                else f"weighted vote by {params.verifier}"
            )
        else:
            # The last stage's groups: nothing was drawn since.
            result = await vote(
                ctx,
                request,
                drawn,
                self.name,
                stopped_early=stopped,
                requested=requested,
                votes=votes,
                stop=stop,
            )
        return _traced(result, stages, params, path)

    async def _weighted(
        self,
        ctx: StrategyContext,
        request: StrategyRequest,
        params: AutoParams,
        drawn: list[Sampled],
        requested: int,
    ) -> StrategyResult:
        assert params.verifier is not None
        try:
            scores = await score(ctx, request, params.verifier, drawn)
        except VerifierError as exc:
            return await vote_instead(
                ctx, request, drawn, self.name, params.verifier, exc, requested
            )
        scored = Scored(
            drawn, scores, [s.aggregated(params.aggregation) for s in scores], requested=requested
        )
        chosen, votes = await WeightedVote().choose(
            ctx, scored, request.sampling.n, with_trace=True
        )
        return result_of(
            ctx, request, self.name, drawn, chosen, scored=scored, votes=votes, requested=requested
        )


def _traced(
    result: StrategyResult, stages: list[_StageRecord], params: AutoParams, path: str
) -> StrategyResult:
    """The result, its trace saying which path the policy took."""
    auto = {
        "path": path,
        "stage": len(stages),
        "stages": [dataclasses.asdict(s) for s in stages],
        "policy": [s.model_dump() for s in params.policy],
    }
    return dataclasses.replace(result, trace={**(result.trace or {}), "auto": auto})
