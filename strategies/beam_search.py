"""`beam_search`: step-level beam search guided by a process reward model.

The search of Snell et al., "Scaling LLM Test-Time Compute Optimally can be More Effective
than Scaling Model Parameters" (2024), as Hugging Face's search-and-learn implements it:

1. Expand: sample N first steps of the answer (one request, `n` = N).
2. Score: every new partial solution with the PRM, in one verifier call. With `lookahead` k,
   each is first extended greedily by up to k steps and the extension is what gets scored.
3. Prune: solutions that ended are set aside; the N/M best unfinished ones stay (M =
   `beam_width`).
4. Expand each kept solution M ways (one request per prefix, `n` = M) and go back to 2, until
   `num_iterations` or until no unfinished solution is left.

The answer is the finished solution with the best aggregated PRM score (ties: the earliest).
If none finished, the best unfinished one is returned, and so it is when the token or time
budget runs out; either way the response says why in `reasoning_stopped_early`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from pydantic import BaseModel, Field

from strategies.base import StrategyContext, StrategyRequest, StrategyResult
from strategies.candidates import effort_n
from strategies.steps import (
    BeamParams,
    BudgetSpent,
    Node,
    SearchBudget,
    best,
    expand,
    look_ahead,
    score,
    search_result,
    top,
)

__all__ = ["BeamSearch", "BeamSearchParams"]


class BeamSearchParams(BeamParams):
    """Params of `beam_search`; `n` must be a multiple of `beam_width`."""

    lookahead: int = Field(default=0, ge=0, le=8)


class BeamSearch:
    """Keep the N/M best partial solutions at every step, expand each M ways."""

    name: ClassVar[str] = "beam_search"
    params_model: ClassVar[type[BaseModel]] = BeamSearchParams

    async def run(
        self, request: StrategyRequest, params: BeamSearchParams, ctx: StrategyContext
    ) -> StrategyResult:
        budget = SearchBudget(ctx, params)
        n = effort_n(request, params.n, ctx.budget.max_candidates)
        width = min(params.beam_width, n)
        keep = max(1, n // width)
        sampling = dataclasses.replace(request.sampling, temperature=params.temperature)
        root = Node(step="", tokens=0)
        live, finished = [root], []
        stopped: str | None = None
        for _ in range(params.num_iterations):
            try:
                async with budget.guard():
                    # Expand: the root N ways, every kept beam M ways.
                    widths = [n if node is root else width for node in live]
                    new = [
                        c
                        for cs in await expand(ctx, request.prompt, live, widths, sampling, params)
                        for c in cs
                    ]
                    # Score, through the lookahead when there is one.
                    texts = await look_ahead(
                        ctx, request.prompt, new, params.lookahead, sampling, params
                    )
                    await score(ctx, request, new, params, texts)
            except BudgetSpent as spent:
                stopped = str(spent)
                break
            # Prune: set finished solutions aside, keep the N/M best of the rest.
            finished += [node for node in new if node.is_final]
            live = top([node for node in new if not node.is_final], keep)
            if not live:
                break
        chosen = best(finished)
        if chosen is None:
            chosen = best([node for node in live if node is not root]) or root
            stopped = stopped or f"no beam finished within {params.num_iterations} iterations"
        return search_result(
            ctx, request, self.name, root, chosen, stopped, beams=n, beam_width=width
        )
