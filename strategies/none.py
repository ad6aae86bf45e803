"""`none`: plain generation. The request goes to the model as it came; nothing is added.

A token or dollar `budget` cuts `max_tokens` to what it affords; past a `seconds` budget the
request fails with 504, as there is no partial answer.

Reasoning that a vLLM reasoning parser split off is passed through in `message.reasoning`;
`tools` reach the backend with the prompt, and the calls it returns (or streams) pass through.
"""

from __future__ import annotations

from typing import ClassVar

from backends.base import StreamDelta
from strategies.base import (
    Choice,
    ChoiceDelta,
    NoParams,
    StrategyParams,
    StrategyRequest,
    StrategyResult,
)
from strategies.budget import capped_by_budget
from strategies.context import StrategyContext

__all__ = ["PlainGeneration"]


class PlainGeneration:
    """Sample the request's `n` completions and return them unchanged."""

    name: ClassVar[str] = "none"
    takes_tools: ClassVar[bool] = True
    takes_json: ClassVar[bool] = True
    params_model: ClassVar[type[StrategyParams]] = NoParams

    async def run(
        self, request: StrategyRequest, params: NoParams, ctx: StrategyContext
    ) -> StrategyResult:
        sampling = ctx.budget.capped(request.sampling)

        async def forward(delta: StreamDelta) -> None:
            await ctx.emit(
                ChoiceDelta(
                    delta.index, delta.text, delta.reasoning, delta.logprobs, delta.tool_calls
                )
            )

        async with ctx.budget.timed(self.name):
            if ctx.is_streaming:
                generation = await ctx.generate_streamed(request.prompt, sampling, forward)
            else:
                generation = await ctx.generate(request.prompt, sampling)
        choices = tuple(
            Choice(
                c.text,
                c.finish_reason,
                content_tokens=c.tokens,
                reasoning=c.reasoning,
                logprobs=c.logprobs,
                tool_calls=c.tool_calls,
            )
            for c in generation.completions
        )
        return StrategyResult(choices, ctx.usage, stopped_early=capped_by_budget(request, sampling))
