"""Step-level search: what beam search, DVTS and MCTS share.

A solution is a path of steps through a tree; a step ends at a separator (`\\n\\n` by default),
which stays in its text. Expanding a node asks the backend to continue the node's path with
one request carrying all of the node's children (`n`), so a search step sends one request per
distinct prefix, and scoring sends every path of a step to the verifier in one call.

A search spends a budget of generated tokens and seconds; `SearchBudget` tells when it is
spent, and stops calls in flight at the deadline, so the search can answer with its best
solution so far and say that it stopped early.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from server.backends.base import ChatMessage, ChatPrompt, Prompt, SamplingParams, TextPrompt
from strategies.base import Choice, ParamsContext, StrategyContext, StrategyRequest, StrategyResult
from strategies.candidates import question_of
from verifiers.base import Aggregation, Candidate

__all__ = [
    "BeamParams",
    "BudgetSpent",
    "Node",
    "SearchBudget",
    "SearchParams",
    "best",
    "continuation",
    "expand",
    "look_ahead",
    "score",
    "search_result",
    "top",
]


class SearchParams(BaseModel):
    """Params every step-level search takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    def _known_verifier_and_ceilings(self, info: ValidationInfo) -> SearchParams:
        context = ParamsContext.of(info.context)
        context.require_verifier(self.verifier)
        if (
            self.max_search_tokens is not None
            and self.max_search_tokens > context.search_max_tokens
        ):
            raise ValueError(f"max_search_tokens is over this server's {context.search_max_tokens}")
        if (
            self.max_search_seconds is not None
            and self.max_search_seconds > context.search_max_seconds
        ):
            raise ValueError(
                f"max_search_seconds is over this server's {context.search_max_seconds:g}"
            )
        return self


class BeamParams(SearchParams):
    """Params of the beam searches: N beams, each kept one expanded M ways per step."""

    n: int | None = Field(default=None, ge=1, description="Beams (default from reasoning_effort).")
    beam_width: int = Field(default=4, ge=1, description="M: expansions per kept beam per step.")
    num_iterations: int = Field(default=10, ge=1, le=100)

    @model_validator(mode="after")
    def _beams_divide(self, info: ValidationInfo) -> BeamParams:
        if self.n is not None and self.n % self.beam_width:
            raise ValueError(f"n ({self.n}) must be a multiple of beam_width ({self.beam_width})")
        max_n = ParamsContext.of(info.context).max_n
        if self.n is not None and self.n > max_n:
            raise ValueError(f"n is {self.n}; this server allows at most {max_n}")
        return self


@dataclass(eq=False)
class Node:
    """One step of a partial solution; the root holds no step."""

    step: str
    tokens: int
    parent: Node | None = None
    is_final: bool = False
    prior: float = 1.0
    score: float | None = None
    step_scores: tuple[float, ...] | None = None
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
            "score": self.score,
            "step_scores": list(self.step_scores) if self.step_scores else None,
            "visits": self.visits,
            "tokens": self.tokens + self.lookahead_tokens,
            "final": self.is_final,
            "children": [child.trace() for child in self.children],
        }


class BudgetSpent(Exception):
    """A search's token or time budget ran out; carries the reason to report."""


class SearchBudget:
    """Generated tokens and seconds a search may spend, from its params or the server's defaults."""

    def __init__(self, ctx: StrategyContext, params: SearchParams) -> None:
        loop = asyncio.get_running_loop()
        self._usage = ctx.usage
        self._start = ctx.usage.completion_tokens
        self.max_tokens = params.max_search_tokens or ctx.budget.search_tokens
        self.seconds = params.max_search_seconds or ctx.budget.search_seconds
        self.deadline = loop.time() + self.seconds
        if ctx.budget.deadline is not None:
            # Leave the request a moment to answer with what the search found.
            self.deadline = min(self.deadline, ctx.budget.deadline - 1.0)

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


def continuation(prompt: Prompt, prefix: str) -> Prompt:
    """The prompt that makes the model continue `prefix` as its own answer."""
    if not prefix:
        return prompt
    if isinstance(prompt, TextPrompt):
        return TextPrompt(prompt.text + prefix)
    messages = prompt.messages
    if prompt.continue_final_message:
        # The client already began the answer: the search continues after it.
        last = messages[-1]
        messages = (*messages[:-1], ChatMessage(last.role, last.content + prefix))
    else:
        messages = (*messages, ChatMessage("assistant", prefix))
    return ChatPrompt(messages, continue_final_message=True)


async def expand(
    ctx: StrategyContext,
    prompt: Prompt,
    nodes: Sequence[Node],
    widths: Sequence[int],
    sampling: SamplingParams,
    params: SearchParams,
) -> list[list[Node]]:
    """`widths[i]` new children for each node: one request per distinct prefix, with `n` for
    all its children, every request in flight at once."""
    by_path: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        by_path.setdefault(node.path, []).append(i)
    async with asyncio.TaskGroup() as group:
        requests = {
            path: group.create_task(
                ctx.generate(
                    continuation(prompt, path),
                    dataclasses.replace(
                        sampling,
                        n=sum(widths[i] for i in members),
                        stop=(params.step_separator,),
                        include_stop=True,
                        max_tokens=_step_tokens(nodes[members[0]], sampling, params),
                    ),
                )
            )
            for path, members in by_path.items()
        }
    children: list[list[Node]] = [[] for _ in nodes]
    for path, members in by_path.items():
        completions = iter(requests[path].result().completions)
        for i in members:
            node = nodes[i]
            for completion in (next(completions) for _ in range(widths[i])):
                ended = completion.finish_reason == "stop" and not completion.text.endswith(
                    params.step_separator
                )
                child = Node(step=completion.text, tokens=completion.tokens, parent=node)
                if completion.logprobs:
                    lps = [t.logprob for t in completion.logprobs]
                    child.mean_logprob = sum(lps) / len(lps)
                # The solution is over at the end of sequence, or when no token is left for it.
                child.is_final = ended or child.path_tokens >= sampling.max_tokens
                node.children.append(child)
                children[i].append(child)
    return children


def _step_tokens(node: Node, sampling: SamplingParams, params: SearchParams) -> int:
    return max(1, min(params.max_step_tokens, sampling.max_tokens - node.path_tokens))


async def look_ahead(
    ctx: StrategyContext,
    prompt: Prompt,
    nodes: Sequence[Node],
    steps: int,
    sampling: SamplingParams,
    params: SearchParams,
) -> list[str]:
    """Each node's path extended greedily by up to `steps` more steps (the texts to score);
    the tree keeps only the nodes themselves, and their lookahead tokens are counted on them."""

    async def extend(node: Node) -> str:
        text, tokens = node.path, node.path_tokens
        greedy = dataclasses.replace(sampling, n=1, temperature=0.0)
        for _ in range(steps):
            if node.is_final or tokens >= sampling.max_tokens:
                break
            generation = await ctx.generate(
                continuation(prompt, text),
                dataclasses.replace(
                    greedy,
                    stop=(params.step_separator,),
                    include_stop=True,
                    max_tokens=max(1, min(params.max_step_tokens, sampling.max_tokens - tokens)),
                ),
            )
            completion = generation.completions[0]
            text += completion.text
            tokens += completion.tokens
            node.lookahead_tokens += completion.tokens
            if not completion.text.endswith(params.step_separator):
                break
        return text

    if steps == 0:
        return [node.path for node in nodes]
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(extend(node)) for node in nodes]
    return [task.result() for task in tasks]


async def score(
    ctx: StrategyContext,
    request: StrategyRequest,
    nodes: Sequence[Node],
    params: SearchParams,
    texts: Sequence[str] | None = None,
) -> None:
    """Score every node's path (or the given texts for them) with the verifier, in one call."""
    if not nodes:
        return
    paths = texts if texts is not None else [node.path for node in nodes]
    scores = await ctx.verify(
        params.verifier, question_of(request.prompt), [Candidate(path) for path in paths]
    )
    for node, scored in zip(nodes, scores, strict=True):
        node.score = scored.aggregated(params.aggregation)
        node.step_scores = scored.steps


def top(nodes: Sequence[Node], k: int) -> list[Node]:
    """The `k` best-scored nodes; among equal scores, the earlier."""
    ranked = sorted(range(len(nodes)), key=lambda i: -(nodes[i].score or 0.0))
    return [nodes[i] for i in ranked[:k]]


def best(nodes: Sequence[Node]) -> Node | None:
    """The best-scored node (the earliest among equals), or None."""
    chosen = top(nodes, 1)
    return chosen[0] if chosen else None


def search_result(
    ctx: StrategyContext,
    request: StrategyRequest,
    strategy: str,
    root: Node,
    chosen: Node,
    stopped_early: str | None,
    **trace: Any,
) -> StrategyResult:
    """The chosen path as the answer, with the whole tree as the trace."""
    path_tokens = chosen.path_tokens
    choice = Choice(
        content=chosen.path,
        finish_reason="stop" if chosen.is_final else "length",
        content_tokens=path_tokens,
    )
    tree_tokens = sum(node.tokens + node.lookahead_tokens for node in root.nodes())
    return StrategyResult(
        (choice,),
        ctx.usage,
        stopped_early=stopped_early,
        trace={
            "strategy": strategy,
            "answer": chosen.path,
            "score": chosen.score,
            "tokens": tree_tokens,
            "stopped_early": stopped_early,
            **trace,
            "tree": root.trace(),
        },
    )
