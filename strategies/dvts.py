"""`dvts`: diverse verifier tree search.

From Beeching, Tunstall and Rush, "Scaling test-time compute with open models" (Hugging Face,
2024): beam search spends its N beams on one crowded region of the tree; DVTS splits them into
N/M independent subtrees, each searched greedily by the PRM, so the solutions stay diverse.

1. Start N/M subtrees at the prompt. Every live subtree expands its current node M ways (one
   request per distinct prefix: at first, one request with `n` = N for all subtrees).
2. Score all new steps with the PRM in one verifier call.
3. In each subtree, set finished solutions aside and keep only its own best unfinished step;
   no subtree ever takes a step from another.
4. Repeat until `num_iterations` or until every subtree has finished.

The answer is the best-scored among the subtrees' best finished solutions (ties: the earlier
subtree). Without finished ones, or at the token or time budget, the best unfinished step is
returned and the response says why in `reasoning_stopped_early`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from strategies.base import StrategyParams, StrategyRequest, StrategyResult
from strategies.context import StrategyContext
from strategies.ranking import best
from strategies.search import BeamParams, Node, Search, by_reward
from strategies.steps import evaluate, expand

__all__ = ["DVTS", "DVTSParams", "Subtree"]


class DVTSParams(BeamParams):
    """Params of `dvts`; `n` must be a multiple of `beam_width` (N/M subtrees)."""


@dataclass(eq=False)
class Subtree:
    """One independent search: its current node and the solutions it finished."""

    live: Node | None
    finished: list[Node] = field(default_factory=list)


class DVTS:
    """N/M independent PRM-greedy subtrees; the best of their finished solutions wins."""

    name: ClassVar[str] = "dvts"
    takes_tools: ClassVar[bool] = False
    takes_json: ClassVar[bool] = False
    takes_thinking: ClassVar[bool] = False
    params_model: ClassVar[type[StrategyParams]] = DVTSParams

    async def run(
        self, request: StrategyRequest, params: DVTSParams, ctx: StrategyContext
    ) -> StrategyResult:
        search = Search.start(ctx, request, params)
        n, width = params.beams(ctx, request)
        subtrees = [Subtree(live=search.root) for _ in range(max(1, n // width))]
        for step in search.steps(params.num_iterations):
            active = [tree for tree in subtrees if tree.live is not None]
            async with search.calls():
                # Expand every subtree's node M ways.
                nodes = [tree.live for tree in active if tree.live is not None]
                children = await expand(
                    ctx, request.prompt, nodes, [width] * len(nodes), search.sampling, params
                )
                # Score all new steps at once.
                await evaluate(ctx, request, [c for cs in children for c in cs], params)
            if search.stopped:
                break
            # Keep each subtree's own best step; finished ones are set aside.
            for tree, own in zip(active, children, strict=True):
                tree.finished += [node for node in own if node.is_final]
                tree.live = best([node for node in own if not node.is_final], by_reward)
            await search.report(step)
            if all(tree.live is None for tree in subtrees):
                break
        return search.answer(
            self.name,
            [node for tree in subtrees for node in tree.finished],
            [tree.live for tree in subtrees if tree.live is not None],
            f"no subtree finished within {params.num_iterations} iterations",
            allowed=params.num_iterations * len(subtrees) * width,
            subtrees=len(subtrees),
            beam_width=width,
        )
