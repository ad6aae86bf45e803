"""Reading a backend's stream: pass each piece of text on as it comes, keep the whole generation.

A strategy that streams to its client still needs what a plain call returns (every completion's
text, finish reason, token count and log-probabilities); `collect` rebuilds that `Generation`
from the stream's deltas and its final `StreamEnd`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from backends.base import (
    Completion,
    Generation,
    SamplingParams,
    StreamDelta,
    StreamEnd,
    StreamEvent,
    TokenLogprob,
)
from backends.errors import BackendResponseError

__all__ = ["DeltaHandler", "collect"]

DeltaHandler = Callable[[StreamDelta], Awaitable[None]]


async def collect(
    events: AsyncIterator[StreamEvent], params: SamplingParams, on_delta: DeltaHandler
) -> Generation:
    """The generation a stream carried; each delta goes to `on_delta` as it arrives."""
    texts = [""] * params.n
    reasonings = [""] * params.n
    logprobs: list[list[TokenLogprob]] = [[] for _ in range(params.n)]
    end: StreamEnd | None = None
    async for event in events:
        if isinstance(event, StreamEnd):
            end = event
            continue
        texts[event.index] += event.text
        reasonings[event.index] += event.reasoning
        logprobs[event.index].extend(event.logprobs or ())
        await on_delta(event)
    if end is None:
        raise BackendResponseError("the backend's stream ended without its final event")
    completions = tuple(
        Completion(
            text=texts[i],
            finish_reason=end.finish_reasons[i],
            tokens=end.completion_tokens[i],
            logprobs=tuple(logprobs[i]) if params.logprobs is not None else None,
            reasoning=reasonings[i] or None,
        )
        for i in range(params.n)
    )
    return Generation(completions, end.prompt_tokens, queue_seconds=end.queue_seconds)
