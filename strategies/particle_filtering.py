"""`particle_filtering`: PRM-guided sequential Monte Carlo over reasoning steps.

From Puri et al., "A Probabilistic Inference Approach to Inference-Time Scaling of LLMs using
Particle-Based Monte Carlo Methods" (2025; "Rollout Roulette"). Where beam search keeps the
best partial solutions, particle filtering keeps a population drawn in proportion to the PRM's
belief, so a solution the PRM under-rates early is not pruned for good:

1. Start N particles (partial solutions) at the prompt.
2. Advance every particle by one step: one backend request per distinct prefix, with `n` for
   all the particles that share it (resampled copies of one particle share its prefix).
3. Weigh: score every new step's path with the PRM, in one verifier call.
4. Particles that finished are set aside and no longer advanced.
5. Resample the others: draw as many particles as are still unfinished (N minus those set
   aside) from them, with replacement, with probabilities softmax(score / T), T being
   `resampling_temperature`. The draws are seeded by the request's `seed` when it has one.
6. Repeat from 2 until `num_iterations` or until every particle has finished.

The answer is the finished particle with the best aggregated score (ties: the earliest), or with
`selection: weighted_vote` the best-scored member of the answer group whose finished particles'
scores sum highest. Without finished ones, or at the token or time budget, the best unfinished
particle is returned and the response says why in `reasoning_stopped_early`.

Two choices differ from the authors' reference code, which keeps finished particles in the
population (a finished one drawn again fills a slot without generating) and takes the softmax
of the scores' log-odds: here a finished particle is kept once and its slot is not refilled, so
a run never advances more than N particles per step nor keeps more than N finished ones; and
the softmax is of the scores themselves, as the paper's algorithm states it, any verifier's
scale being valid, with `resampling_temperature` to sharpen it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from strategies.answer_groups import rank_groups
from strategies.base import StrategyParams, StrategyRequest, StrategyResult
from strategies.candidate_params import AnswerParams
from strategies.context import StrategyContext
from strategies.effort import effort_n
from strategies.sampling import Extraction, Sampled
from strategies.search import Node, Search, SearchParams, by_reward
from strategies.steps import evaluate, expand
from verifiers.equivalence import EquivalencePool

__all__ = [
    "ParticleFiltering",
    "ParticleFilteringParams",
    "heaviest_answer",
    "resample",
    "softmax",
]


class ParticleFilteringParams(SearchParams, AnswerParams):
    """Params of `particle_filtering`."""

    n: int | None = Field(
        default=None, ge=1, description="Particles (default from reasoning_effort)."
    )
    num_iterations: int = Field(default=10, ge=1, le=100, description="Steps at most.")
    resampling_temperature: float = Field(
        default=1.0, gt=0.0, le=100.0, description="T of the softmax(score / T) resampling."
    )
    selection: Literal["best", "weighted_vote"] = Field(
        default="best", description="Best finished particle, or a score-weighted answer vote."
    )

    def samples(self, request: StrategyRequest, max_n: int) -> int:
        return effort_n(request, self.n, max_n)


def softmax(scores: Sequence[float], temperature: float) -> list[float]:
    """softmax(score / T): the resampling probabilities."""
    top = max(scores)
    # Shifted by the largest score, so that no exponent overflows at a low temperature.
    weights = [math.exp((s - top) / temperature) for s in scores]
    total = sum(weights)
    return [w / total for w in weights]


def resample(rng: random.Random, probabilities: Sequence[float], k: int) -> list[int]:
    """`k` multinomial draws of particle indices, in index order (copies of one particle side
    by side, so they share one request)."""
    return sorted(rng.choices(range(len(probabilities)), weights=probabilities, k=k))


class ParticleFiltering:
    """N particles advanced step by step, resampled by their PRM scores."""

    name: ClassVar[str] = "particle_filtering"
    takes_tools: ClassVar[bool] = False
    takes_json: ClassVar[bool] = False
    takes_thinking: ClassVar[bool] = False
    params_model: ClassVar[type[StrategyParams]] = ParticleFilteringParams

    async def run(
        self, request: StrategyRequest, params: ParticleFilteringParams, ctx: StrategyContext
    ) -> StrategyResult:
        search = Search.start(ctx, request, params)
        n = params.samples(request, ctx.limits.max_n)
        # Seeded by the request when it has a seed, so a run is reproducible; else at random.
        rng = random.Random(request.sampling.seed)
        particles: list[Node] = [search.root] * n
        finished: list[Node] = []
        history: list[dict[str, Any]] = []
        for number in search.steps(params.num_iterations):
            async with search.calls():
                # Advance every particle one step.
                children = await expand(
                    ctx,
                    request.prompt,
                    particles,
                    [1] * len(particles),
                    search.sampling,
                    params,
                )
                new = [c for cs in children for c in cs]
                # Weigh the new steps, all in one verifier call.
                await evaluate(ctx, request, new, params)
            if search.stopped:
                break
            # Set finished particles aside.
            finished += [node for node in new if node.is_final]
            live = [i for i, node in enumerate(new) if not node.is_final]
            step: dict[str, Any] = {
                "scores": [node.reward for node in new],
                "finished": [i for i, node in enumerate(new) if node.is_final],
            }
            history.append(step)
            await search.report(number)
            if not live:
                break
            # Resample the others into the slots left (the trace indexes this step's particles).
            probabilities = softmax(
                [by_reward(new[i]) for i in live], params.resampling_temperature
            )
            drawn = [live[j] for j in resample(rng, probabilities, n - len(finished))]
            shown: list[float | None] = [None] * len(new)
            for i, p in zip(live, probabilities, strict=True):
                shown[i] = p
            step |= {"probabilities": shown, "drawn": drawn}
            particles = [new[i] for i in drawn]
        winners: set[int] = set()
        votes: dict[str, float] = {}
        if params.selection == "weighted_vote":
            winners, votes = await heaviest_answer(
                finished, Extraction.of(request, params), ctx.equivalence
            )
        return search.answer(
            self.name,
            finished,
            _distinct(particles),
            f"no particle finished within {params.num_iterations} steps",
            allowed=params.num_iterations * n,
            # With a vote, the winning group's members first; then by score.
            key=lambda node: (id(node) in winners, by_reward(node)),
            particles=n,
            resampling=history,
            votes=votes,
        )


async def heaviest_answer(
    finished: Sequence[Node], extraction: Extraction, pool: EquivalencePool | None
) -> tuple[set[int], dict[str, float]]:
    """`selection: weighted_vote`: the finished particles (by `id`) of the answer group whose
    scores sum highest, and every group's total."""
    sampled = [
        Sampled(
            text=node.path,
            answer=extraction.answer(node.path),
            tokens=node.path_tokens,
            finish_reason="stop",
            logprobs=None,
        )
        for node in finished
    ]
    votes = await rank_groups(sampled, [by_reward(node) for node in finished], pool)
    if not votes:
        return set(), {}
    return {id(finished[i]) for i in votes[0].members}, {v.answer: v.weight for v in votes}


def _distinct(nodes: Sequence[Node]) -> list[Node]:
    """`nodes` without repeats (resampled copies), in order."""
    return list({id(node): node for node in nodes}.values())
