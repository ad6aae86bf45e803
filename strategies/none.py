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
from strategies.thinking import StreamSplit, generate_thinking, split_completion, tags_for

__all__ = ["PlainGeneration"]


class PlainGeneration:
    """Sample the request's `n` completions and return them unchanged."""

    name: ClassVar[str] = "none"
    takes_tools: ClassVar[bool] = True
    takes_json: ClassVar[bool] = True
    takes_thinking: ClassVar[bool] = True
    params_model: ClassVar[type[StrategyParams]] = NoParams

    async def run(
        self, request: StrategyRequest, params: NoParams, ctx: StrategyContext
    ) -> StrategyResult:
        sampling = ctx.budget.capped(request.sampling)
        thinking = params.thinking_of(request)
        tags = tags_for(request.prompt, ctx.thinking_tags)
        splits = [StreamSplit(tags) for _ in range(sampling.n)]

        async def forward(delta: StreamDelta) -> None:
            thought, said = splits[delta.index].feed(delta.text)
            await ctx.emit(
                ChoiceDelta(
                    delta.index,
                    said,
                    delta.reasoning + thought,
                    delta.logprobs,
                    delta.tool_calls,
                )
            )

        chains = None
        async with ctx.budget.timed(self.name):
            if thinking is not None:
                # Each candidate is a chain of calls: it streams whole once it has answered.
                generation, chains = await generate_thinking(
                    ctx, request.prompt, sampling, thinking, tags
                )
                for i, c in enumerate(generation.completions):
                    await ctx.emit(ChoiceDelta(i, c.text, c.reasoning or "", c.logprobs))
            elif ctx.is_streaming:
                generation = await ctx.generate_streamed(request.prompt, sampling, forward)
                for i, split in enumerate(splits):
                    thought, said = split.flush()
                    if thought or said:
                        await ctx.emit(ChoiceDelta(i, said, thought))
            else:
                generation = await ctx.generate(request.prompt, sampling)
        completions = [split_completion(c, tags) for c in generation.completions]
        if thinking is None:
            # `generate_thinking` counted its own; a whole completion split here is counted now.
            ctx.usage.thinking_tokens += sum(c.reasoning_tokens for c in completions)
        choices = tuple(
            Choice(
                c.text,
                c.finish_reason,
                content_tokens=c.tokens - c.reasoning_tokens,
                reasoning=c.reasoning,
                logprobs=c.logprobs,
                tool_calls=c.tool_calls,
            )
            for c in completions
        )
        stopped = capped_by_budget(request, sampling)
        if chains is not None:
            stopped = chains.stopped() or stopped
        return StrategyResult(choices, ctx.usage, stopped_early=stopped)
