"""Reading a backend's stream: pass each piece of text on as it comes, keep the whole generation.

A strategy that streams to its client still needs what a plain call returns (every completion's
text, finish reason, token count, log-probabilities and tool calls); `collect` rebuilds that
`Generation` from the stream's deltas and its final `StreamEnd`.
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
    ToolCall,
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
    # Per completion, each call's id, name and arguments so far, by the call's index.
    calls: list[dict[int, list[str]]] = [{} for _ in range(params.n)]
    end: StreamEnd | None = None
    async for event in events:
        if isinstance(event, StreamEnd):
            end = event
            continue
        texts[event.index] += event.text
        reasonings[event.index] += event.reasoning
        logprobs[event.index].extend(event.logprobs or ())
        for piece in event.tool_calls:
            call = calls[event.index].setdefault(piece.index, ["", "", ""])
            call[0] = call[0] or piece.id or ""
            call[1] = call[1] or piece.name or ""
            call[2] += piece.arguments
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
            tool_calls=tuple(ToolCall(*calls[i][k]) for k in sorted(calls[i])),
        )
        for i in range(params.n)
    )
    return Generation(completions, end.prompt_tokens, queue_seconds=end.queue_seconds)
