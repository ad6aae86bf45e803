"""`mcts`: step-level Monte Carlo tree search with a process reward model as the value.

As in AlphaZero-style PUCT search applied to reasoning steps (e.g. Zhang et al.,
"ReST-MCTS*", 2024; Guan et al., "rStar-Math", 2025). Each iteration:

1. Select: from the root, repeatedly move to the child with the highest PUCT score
   Q(child) + c * P(child) * sqrt(N(parent)) / (1 + N(child)), where Q is the child's mean
   backed-up value, N its visit count, c `exploration`, and P its prior: the softmax, over its
   siblings, of each step's mean token log-probability (uniform when there are none). Stop at
   a node with no children, or at a finished solution.
2. Expand: unless that node ends a solution or is `max_depth` steps deep, sample `k` next steps
   for it (one request, `n` = k).
3. Evaluate: each new step's value is the PRM's score of its path (`evaluation: prm`), or of a
   greedy rollout from it to the end of the solution (`evaluation: rollout`). A node that
   cannot be expanded is evaluated by its own score.
4. Back-propagate: add each value to the visit counts and value sums of the node and all its
   ancestors.

The answer is the finished solution with the best score (ties: the more visited, then the
earlier). Without one, or at the token or time budget, the best-scored partial solution is
returned, and the response says why in `reasoning_stopped_early`.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from strategies.base import StrategyParams, StrategyRequest, StrategyResult
from strategies.context import StrategyContext
from strategies.ranking import ranked
from strategies.search import Node, Search, SearchParams, by_reward
from strategies.steps import evaluate, expand, look_ahead

__all__ = ["MCTS", "MCTSParams", "backpropagate", "puct", "select", "set_priors"]


class MCTSParams(SearchParams):
    """Params of `mcts`."""

    iterations: int = Field(default=16, ge=1, le=512, description="Select-expand-evaluate rounds.")
    exploration: float = Field(default=1.0, ge=0.0, description="c in the PUCT formula.")
    k: int = Field(default=3, ge=1, le=16, description="Steps sampled per expansion.")
    max_depth: int = Field(default=8, ge=1, le=64, description="Steps in a solution at most.")
    evaluation: Literal["prm", "rollout"] = "prm"


def puct(parent: Node, child: Node, exploration: float) -> float:
    """Q(child) + c * P(child) * sqrt(N(parent)) / (1 + N(child))."""
    return child.value + exploration * child.prior * math.sqrt(parent.visits) / (1 + child.visits)


def select(root: Node, exploration: float) -> Node:
    """Follow the highest PUCT score down to a leaf (the earliest child among equals)."""
    node = root
    while node.children and not node.is_final:
        parent = node
        node = ranked(parent.children, key=lambda child: puct(parent, child, exploration))[0]
    return node


def set_priors(children: list[Node]) -> None:
    """Each child's prior: a softmax of the siblings' mean token log-probabilities."""
    if not children or any(child.mean_logprob is None for child in children):
        for child in children:
            child.prior = 1.0 / len(children)
        return
    top = max(child.mean_logprob or 0.0 for child in children)
    weights = [math.exp((child.mean_logprob or 0.0) - top) for child in children]
    total = sum(weights)
    for child, weight in zip(children, weights, strict=True):
        child.prior = weight / total


def backpropagate(node: Node, value: float) -> None:
    """Count a visit with `value` on the node and every ancestor."""
    current: Node | None = node
    while current is not None:
        current.visits += 1
        current.value_sum += value
        current = current.parent


class MCTS:
    """PUCT search over reasoning steps, valued by a PRM."""

    name: ClassVar[str] = "mcts"
    takes_tools: ClassVar[bool] = False
    takes_json: ClassVar[bool] = False
    takes_thinking: ClassVar[bool] = False
    params_model: ClassVar[type[StrategyParams]] = MCTSParams

    async def run(
        self, request: StrategyRequest, params: MCTSParams, ctx: StrategyContext
    ) -> StrategyResult:
        # The generator's own log-probabilities give the priors.
        search = Search.start(ctx, request, params, priors=True, unit="rollout")
        root, prompt, sampling = search.root, request.prompt, search.sampling
        for step in search.steps(params.iterations):
            async with search.calls():
                # Select.
                leaf = select(root, params.exploration)
                if leaf.is_final or leaf.depth >= params.max_depth:
                    backpropagate(leaf, by_reward(leaf))
                    continue
                # Expand.
                (children,) = await expand(ctx, prompt, [leaf], [params.k], sampling, params)
                set_priors(children)
                # Evaluate: the PRM on each step's path, or on a greedy rollout from it.
                depth_left = params.max_depth - leaf.depth - 1
                texts = None
                if params.evaluation == "rollout":
                    texts = await look_ahead(ctx, prompt, children, depth_left, sampling, params)
                await evaluate(ctx, request, children, params, texts)
            if search.stopped:
                break
            # Back-propagate.
            for child in children:
                backpropagate(child, by_reward(child))
            await search.report(step)
        nodes = list(root.nodes())
        return search.answer(
            self.name,
            [node for node in nodes if node.is_final],
            nodes,
            f"no solution finished within {params.iterations} iterations",
            allowed=params.iterations * params.k,
            # Ties: the more visited, then the earlier.
            key=lambda node: (by_reward(node), node.visits),
        )
