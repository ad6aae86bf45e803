"""What the step-level searches (beam search, DVTS, MCTS) share: their params, the tree of
steps, the budget they spend, how a search starts and how it answers.

A search spends the request's budget narrowed by its own caps (`search_allowance`); the
allowance tells when it is spent, caps each step to the tokens left, and stops calls in flight at
the deadline, so the search can answer with its best solution so far and say that it stopped
early. The step mechanics (expanding and scoring
nodes) are in `strategies.steps`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, ValidationInfo, model_validator

from backends.base import SamplingParams
from strategies.base import (
    Choice,
    InvalidParamsError,
    MaxSpend,
    ParamsContext,
    StrategyRequest,
    StrategyResult,
    TracedParams,
    estimated_tokens,
    prompt_chars,
)
from strategies.budget import Allowance, BudgetSpent
from strategies.context import StrategyContext
from strategies.effort import effort_n
from strategies.limits import Limits
from strategies.ranking import best
from strategies.stops import StopKind, stop_kind
from verifiers.base import Aggregation

__all__ = [
    "BeamParams",
    "Node",
    "Search",
    "SearchParams",
    "by_reward",
    "search_allowance",
]

# How many times over a search's PRM may read what the search generates, each partial solution
# with the question: scoring every step re-reads the path so far, so reading grows with depth.
# Past it the search stops and answers from what it has, as at any budget.
SEARCH_READS = 4


class SearchParams(TracedParams):
    """Params every step-level search takes."""

    verifier: str = Field(
        default="llm_judge", description="A configured PRM-capable verifier (vllm_prm, llm_judge)."
    )
    aggregation: Aggregation = Field(
        default=Aggregation.LAST, description="How a path's step scores reduce to one score."
    )
    temperature: float = Field(default=0.8, ge=0.0, le=2.0, description="Sampling of steps.")
    step_separator: str = Field(default="\n\n", min_length=1)
    max_step_tokens: int = Field(default=256, ge=1, description="Tokens one step may take.")
    max_search_tokens: int | None = Field(
        default=None, ge=1, description="Generated tokens the search may spend (budget's alias)."
    )
    max_search_seconds: float | None = Field(
        default=None, gt=0, description="Time the search may take (budget.seconds' alias)."
    )

    def samples(self, request: StrategyRequest, max_n: int) -> int:
        """Partial solutions advanced side by side (beams, particles); one by default."""
        return 1

    def max_spend(self, request: StrategyRequest, limits: Limits) -> MaxSpend:
        """`max_search_tokens` (or the server's default) generated; the PRM reads each partial
        solution again, with the question, at every step it scores, which the search may do
        up to `SEARCH_READS` times over before it stops for want of reading."""
        generated = self.max_search_tokens or limits.search_default_tokens
        samples = self.samples(request, limits.max_n)
        question = estimated_tokens(prompt_chars(request.prompt))
        return self.spend_of(
            request,
            samples=samples,
            generated=generated,
            reads=SEARCH_READS * (generated + samples * question),
            asked_tokens=self.max_search_tokens,
        )

    @model_validator(mode="after")
    def _known_verifier(self, info: ValidationInfo) -> SearchParams:
        context = ParamsContext.of(info.context)
        context.require_verifier(self.verifier)
        if self.verifier in context.logprob_verifiers:
            able = sorted(context.verifiers - context.logprob_verifiers)
            raise ValueError(
                f"verifier {self.verifier!r} scores a whole candidate by its token "
                "log-probabilities, which a search's partial solutions do not carry; verifiers "
                f"that can score steps here: {', '.join(able) or 'none'}"
            )
        return self

    def check_request(self, request: StrategyRequest) -> None:
        # A search returns its one best solution, as a string of steps.
        if request.sampling.n > 1:
            raise InvalidParamsError(
                "a search returns one solution, so n must be 1; majority_vote, weighted_vote "
                "and best_of_n return the n best answers",
                param="n",
            )
        if request.sampling.logprobs is not None:
            raise InvalidParamsError(
                "a search's answer is assembled from steps and carries no log-probabilities; "
                "logprobs are returned by none, cot and the sampling strategies",
                param="logprobs",
            )


class BeamParams(SearchParams):
    """Params of the beam searches: N beams, each kept one expanded M ways per step."""

    n: int | None = Field(default=None, ge=1, description="Beams (default from reasoning_effort).")
    beam_width: int = Field(default=4, ge=1, description="M: expansions per kept beam per step.")
    num_iterations: int = Field(default=10, ge=1, le=100)

    @model_validator(mode="after")
    def _beams_divide(self) -> BeamParams:
        if self.n is not None and self.n % self.beam_width:
            raise ValueError(f"n ({self.n}) must be a multiple of beam_width ({self.beam_width})")
        return self

    def samples(self, request: StrategyRequest, max_n: int) -> int:
        return effort_n(request, self.n, max_n)

    def beams(self, ctx: StrategyContext, request: StrategyRequest) -> tuple[int, int]:
        """N, from `n` or the request's effort, and M, at most N."""
        n = self.samples(request, ctx.limits.max_n)
        return n, min(self.beam_width, n)


@dataclass(eq=False)
class Node:
    """One step of a partial solution; the root holds no step.

    `reward` is the verifier's score of the path to here, once evaluated; `visits` and
    `value_sum` are MCTS's statistics; `prior` its prior from the step's log-probabilities.
    A final node ended the solution; `cut` says the request's `max_tokens` ended it.
    """

    step: str
    tokens: int
    parent: Node | None = None
    is_final: bool = False
    cut: bool = False
    prior: float = 1.0
    reward: float | None = None
    step_rewards: tuple[float, ...] | None = None
    visits: int = 0
    value_sum: float = 0.0
    lookahead_tokens: int = 0
    mean_logprob: float | None = None
    children: list[Node] = field(default_factory=list)

    @property
    def path(self) -> str:
        """The partial solution: every step from the root to here."""
        steps = []
        node: Node | None = self
        while node is not None:
            steps.append(node.step)
            node = node.parent
        return "".join(reversed(steps))

    @property
    def path_tokens(self) -> int:
        """Tokens generated along the path."""
        return self.tokens + (self.parent.path_tokens if self.parent else 0)

    @property
    def depth(self) -> int:
        """Steps from the root."""
        return 0 if self.parent is None else self.parent.depth + 1

    @property
    def value(self) -> float:
        """Mean backed-up value (MCTS's Q); 0 before the first visit."""
        return self.value_sum / self.visits if self.visits else 0.0

    def nodes(self) -> Iterable[Node]:
        """This node and every node below it."""
        yield self
        for child in self.children:
            yield from child.nodes()

    def trace(self) -> dict[str, Any]:
        """The subtree as the response's trace shows it."""
        return {
            "text": self.step,
            "score": self.reward,
            "step_scores": list(self.step_rewards) if self.step_rewards else None,
            "visits": self.visits,
            "tokens": self.tokens + self.lookahead_tokens,
            "final": self.is_final,
            "children": [child.trace() for child in self.children],
        }


def by_reward(node: Node) -> float:
    """The ranking key of nodes: the verifier's score (an unscored node counts as 0)."""
    return node.reward or 0.0


def search_allowance(ctx: StrategyContext, params: SearchParams) -> Allowance:
    """The request's budget narrowed by the search's own caps: `max_search_tokens` (generated
    tokens) and `max_search_seconds`, or the server's defaults where the request's budget does
    not bound that unit either."""
    budget = params.budget
    generated = params.max_search_tokens
    if generated is None and (budget is None or (budget.tokens is None and budget.usd is None)):
        generated = ctx.limits.search_default_tokens
    seconds = params.max_search_seconds
    if seconds is None and (budget is None or budget.seconds is None):
        seconds = ctx.limits.search_default_seconds
    # Leave the request a moment to answer with what the search found.
    before = None if ctx.deadline is None else ctx.deadline - 1.0
    return ctx.budget.narrowed(generated=generated, seconds=seconds, before=before)


@dataclass
class Search:
    """A search under way: its budget, how it samples steps, and its tree.

    Every search's loop is the same: `for step in search.steps(count)`, each step's model calls
    in `async with search.calls()`, and a stop as soon as `stopped` is set (the budget ran out);
    the reason is reported with the answer. `exhausted`: every step number was taken.
    """

    ctx: StrategyContext
    budget: Allowance
    sampling: SamplingParams
    root: Node = field(default_factory=lambda: Node(step="", tokens=0))
    stopped: str | None = None
    # What one pass of the loop is called on the trace's spans (MCTS: a rollout), and its number.
    unit: str = "step"
    number: int = 0
    exhausted: bool = False

    @classmethod
    def start(
        cls,
        ctx: StrategyContext,
        request: StrategyRequest,
        params: SearchParams,
        priors: bool = False,
        unit: str = "step",
    ) -> Search:
        """The budget starts now; steps are sampled at the search's temperature, with the
        chosen tokens' log-probabilities when the search needs `priors` from them."""
        sampling = dataclasses.replace(
            request.sampling,
            temperature=params.temperature,
            logprobs=0 if priors else request.sampling.logprobs,
        )
        ctx.budget = search_allowance(ctx, params)
        return cls(ctx, ctx.budget, sampling, unit=unit)

    def steps(self, count: int) -> Iterator[int]:
        """The step numbers, 1 to `count`, while the budget lasts: once it is spent, `stopped`
        says why and no step follows."""
        for number in range(1, count + 1):
            self.stopped = self.stopped or self.budget.spent()
            if self.stopped:
                return
            self.number = number
            yield number
        # Asked for a step after the last: the search ran out of iterations, not of work.
        self.exhausted = True

    @contextlib.asynccontextmanager
    async def calls(self) -> AsyncIterator[None]:
        """Run one step's model calls, cut at the deadline (`Allowance.guard`): then `stopped`
        says why, and the step ends where it was, so the search stops there."""
        with self.ctx.span(self.unit, number=self.number) as span:
            try:
                async with self.budget.guard():
                    yield
            except BudgetSpent as spent:
                self.stopped = str(spent)
                if span is not None:
                    span.set_attribute("ttc.stopped", self.stopped)

    async def report(self, step: int) -> None:
        """Progress after a step: its number and the best score of any partial solution yet."""
        if not self.ctx.is_reporting_progress:
            return  # walking the tree is not free
        scores = [node.reward for node in self.root.nodes() if node.reward is not None]
        best_score = f"{max(scores):.3f}" if scores else "none yet"
        await self.ctx.progress(f"step {step}: best score {best_score}")

    def answer(
        self,
        strategy: str,
        finished: Sequence[Node],
        unfinished: Sequence[Node],
        unfinished_reason: str,
        allowed: int,
        key: Callable[[Node], Any] = by_reward,
        **trace: Any,
    ) -> StrategyResult:
        """The best finished solution by `key`; without one, the best unfinished one (or the
        root), and the response says why the search stopped early. `allowed` is how many steps
        the search would have sampled had it run all its iterations."""
        stopped = self.stopped
        chosen = best(finished, key)
        if chosen is None:
            partial = [node for node in unfinished if node is not self.root]
            chosen = best(partial, key) or self.root
            stopped = stopped or unfinished_reason
        choice = Choice(
            content=chosen.path,
            finish_reason="stop" if chosen.is_final and not chosen.cut else "length",
            content_tokens=chosen.path_tokens,
        )
        tree_tokens, sampled = 0, -1  # the root is no sampled step
        for node in self.root.nodes():
            tree_tokens += node.tokens + node.lookahead_tokens
            sampled += 1
        return StrategyResult(
            (choice,),
            self.ctx.usage,
            stopped_early=stopped,
            drawn=sampled,
            allowed=allowed,
            stop=self.stop_kind(),
            trace={
                "strategy": strategy,
                "answer": chosen.path,
                "score": chosen.reward,
                "tokens": tree_tokens,
                "stopped_early": stopped,
                **trace,
                "tree": self.root.trace(),
            },
        )

    def stop_kind(self) -> StopKind:
        """Why the search stopped: a budget, its iterations, or every solution finished."""
        if self.stopped:
            return stop_kind(self.stopped)
        return "max_steps" if self.exhausted else "all_finished"
