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

from typing import ClassVar

from pydantic import Field

from strategies.base import StrategyParams, StrategyRequest, StrategyResult
from strategies.context import StrategyContext
from strategies.ranking import ranked
from strategies.search import BeamParams, Search, by_reward
from strategies.steps import evaluate, expand, look_ahead

__all__ = ["BeamSearch", "BeamSearchParams"]


class BeamSearchParams(BeamParams):
    """Params of `beam_search`; `n` must be a multiple of `beam_width`."""

    lookahead: int = Field(default=0, ge=0, le=8)


class BeamSearch:
    """Keep the N/M best partial solutions at every step, expand each M ways."""

    name: ClassVar[str] = "beam_search"
    takes_tools: ClassVar[bool] = False
    takes_json: ClassVar[bool] = False
    takes_thinking: ClassVar[bool] = False
    params_model: ClassVar[type[StrategyParams]] = BeamSearchParams

    async def run(
        self, request: StrategyRequest, params: BeamSearchParams, ctx: StrategyContext
    ) -> StrategyResult:
        search = Search.start(ctx, request, params)
        n, width = params.beams(ctx, request)
        keep = max(1, n // width)
        root, prompt, sampling = search.root, request.prompt, search.sampling
        live, finished = [root], []
        for step in search.steps(params.num_iterations):
            async with search.calls():
                # Expand: the root N ways, every kept beam M ways.
                widths = [n if node is root else width for node in live]
                new = [
                    c
                    for cs in await expand(ctx, prompt, live, widths, sampling, params)
                    for c in cs
                ]
                # Score, through the lookahead when there is one.
                texts = await look_ahead(ctx, prompt, new, params.lookahead, sampling, params)
                await evaluate(ctx, request, new, params, texts)
            if search.stopped:
                break
            # Prune: set finished solutions aside, keep the N/M best of the rest.
            finished += [node for node in new if node.is_final]
            live = ranked([node for node in new if not node.is_final], by_reward)[:keep]
            await search.report(step)
            if not live:
                break
        return search.answer(
            self.name,
            finished,
            live,
            f"no beam finished within {params.num_iterations} iterations",
            # The root N ways, then N/M beams M ways at every later step.
            allowed=n + (params.num_iterations - 1) * keep * width,
            beams=n,
            beam_width=width,
        )
