"""What the step-level searches (beam search, DVTS, MCTS) share: their params, the tree of
steps, the budget they spend, how a search starts and how it answers.

A search spends a budget of generated tokens and seconds; `SearchBudget` tells when it is
spent, and stops calls in flight at the deadline, so the search can answer with its best
solution so far and say that it stopped early. The step mechanics (expanding and scoring
nodes) are in `strategies.steps`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, ValidationInfo, model_validator

from backends.base import SamplingParams
from strategies.base import Choice, ParamsContext, StrategyParams, StrategyRequest, StrategyResult
from strategies.candidates import effort_n
from strategies.context import StrategyContext
from strategies.ranking import best
from verifiers.base import Aggregation

__all__ = [
    "BeamParams",
    "BudgetSpent",
    "Node",
    "Search",
    "SearchBudget",
    "SearchParams",
    "by_reward",
]


class SearchParams(StrategyParams):
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
        default=None, ge=1, description="Generated tokens the whole search may spend."
    )
    max_search_seconds: float | None = Field(
        default=None, gt=0, description="Time the whole search may take."
    )
    return_trace: bool = False

    @model_validator(mode="after")
    def _known_verifier(self, info: ValidationInfo) -> SearchParams:
        ParamsContext.of(info.context).require_verifier(self.verifier)
        return self


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

    def beams(self, ctx: StrategyContext, request: StrategyRequest) -> tuple[int, int]:
        """N, from `n` or the request's effort, and M, at most N."""
        n = effort_n(request, self.n, ctx.limits.max_n)
        return n, min(self.beam_width, n)


@dataclass(eq=False)
class Node:
    """One step of a partial solution; the root holds no step.

    `reward` is the verifier's score of the path to here, once evaluated; `visits` and
    `value_sum` are MCTS's statistics; `prior` its prior from the step's log-probabilities.
    """

    step: str
    tokens: int
    parent: Node | None = None
    is_final: bool = False
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


class BudgetSpent(Exception):
    """A search's token or time budget ran out; carries the reason to report."""


class SearchBudget:
    """Generated tokens and seconds a search may spend, from its params or the server's defaults."""

    def __init__(self, ctx: StrategyContext, params: SearchParams) -> None:
        loop = asyncio.get_running_loop()
        self._usage = ctx.usage
        self._start = ctx.usage.completion_tokens
        self.max_tokens = params.max_search_tokens or ctx.limits.search_default_tokens
        self.seconds = params.max_search_seconds or ctx.limits.search_default_seconds
        self.deadline = loop.time() + self.seconds
        if ctx.deadline is not None:
            # Leave the request a moment to answer with what the search found.
            self.deadline = min(self.deadline, ctx.deadline - 1.0)

    def spent(self) -> str | None:
        """Why the search must stop now, or None while budget remains."""
        used = self._usage.completion_tokens - self._start
        if used >= self.max_tokens:
            return f"token budget reached ({used} of {self.max_tokens} generated tokens)"
        if asyncio.get_running_loop().time() >= self.deadline:
            return f"time budget reached ({self.seconds:g} s)"
        return None

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run calls that stop at the deadline; raises `BudgetSpent` when the budget is gone."""
        reason = self.spent()
        if reason is not None:
            raise BudgetSpent(reason)
        limit = asyncio.timeout_at(self.deadline)
        try:
            async with limit:
                yield
        except TimeoutError as exc:
            if limit.expired():
                raise BudgetSpent(f"time budget reached ({self.seconds:g} s)") from exc
            raise


@dataclass
class Search:
    """A search under way: its budget, how it samples steps, and its tree.

    `stopped` is set when the budget ran out, and reported with the answer.
    """

    ctx: StrategyContext
    budget: SearchBudget
    sampling: SamplingParams
    root: Node = field(default_factory=lambda: Node(step="", tokens=0))
    stopped: str | None = None

    @classmethod
    def start(
        cls,
        ctx: StrategyContext,
        request: StrategyRequest,
        params: SearchParams,
        priors: bool = False,
    ) -> Search:
        """The budget starts now; steps are sampled at the search's temperature, with the
        chosen tokens' log-probabilities when the search needs `priors` from them."""
        sampling = dataclasses.replace(
            request.sampling,
            temperature=params.temperature,
            logprobs=0 if priors else request.sampling.logprobs,
        )
        return cls(ctx, SearchBudget(ctx, params), sampling)

    def answer(
        self,
        strategy: str,
        finished: Sequence[Node],
        unfinished: Sequence[Node],
        unfinished_reason: str,
        key: Callable[[Node], Any] = by_reward,
        **trace: Any,
    ) -> StrategyResult:
        """The best finished solution by `key`; without one, the best unfinished one (or the
        root), and the response says why the search stopped early."""
        stopped = self.stopped
        chosen = best(finished, key)
        if chosen is None:
            partial = [node for node in unfinished if node is not self.root]
            chosen = best(partial, key) or self.root
            stopped = stopped or unfinished_reason
        choice = Choice(
            content=chosen.path,
            finish_reason="stop" if chosen.is_final else "length",
            content_tokens=chosen.path_tokens,
        )
        tree_tokens = sum(node.tokens + node.lookahead_tokens for node in self.root.nodes())
        return StrategyResult(
            (choice,),
            self.ctx.usage,
            stopped_early=stopped,
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
