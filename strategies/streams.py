"""Reading a backend's stream: pass each piece of text on as it comes, keep the whole generation.

A strategy that streams to its client still needs what a plain call returns (every completion's
text, finish reason, token count, log-probabilities and tool calls); `collect` rebuilds that
`Generation` from the stream's deltas and its final `StreamEnd`. `collect_until` reads one
completion and closes its stream as soon as the caller has seen enough: closing it is what
stops the backend (vLLM aborts a request whose connection closes; the embedded model drops its
rows).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

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

__all__ = ["Arrived", "DeltaHandler", "collect", "collect_until"]

DeltaHandler = Callable[[StreamDelta], Awaitable[None]]


class Arrived:
    """The tokens a stream's deltas said they carried (`StreamDelta.tokens`, `.prompt_tokens`):
    what a stream cut off before its `StreamEnd` had cost so far."""

    __slots__ = ("prompt_tokens", "tokens")

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.tokens = 0

    def add(self, delta: StreamDelta) -> None:
        """Count one delta."""
        self.prompt_tokens += delta.prompt_tokens
        self.tokens += delta.tokens


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


async def collect_until(
    events: AsyncIterator[StreamEvent],
    params: SamplingParams,
    stop: Callable[[StreamDelta], bool],
    prompt_tokens: int,
) -> tuple[Generation, bool]:
    """The one completion (`params.n` is 1) a stream carried, and whether `stop` cut it short.

    `stop` sees each delta as it arrives; once it says so, the stream is closed at once. A cut
    stream never sends its usage, so its count is rebuilt: a generated token for each
    log-probability that arrived (every backend sends each token's log-probability with it, so
    `params.logprobs` must be set), and `prompt_tokens` (the same prompt's count from an
    earlier call) for its prompt.
    """
    assert params.n == 1 and params.logprobs is not None
    text, reasoning = "", ""
    logprobs: list[TokenLogprob] = []
    async with _closing(events):
        async for event in events:
            if isinstance(event, StreamEnd):
                completion = Completion(
                    text=text,
                    finish_reason=event.finish_reasons[0],
                    tokens=event.completion_tokens[0],
                    logprobs=tuple(logprobs),
                    reasoning=reasoning or None,
                )
                generation = Generation(
                    (completion,), event.prompt_tokens, queue_seconds=event.queue_seconds
                )
                return generation, False
            text += event.text
            reasoning += event.reasoning
            logprobs.extend(event.logprobs or ())
            if stop(event):
                break
        else:
            raise BackendResponseError("the backend's stream ended without its final event")
    # Cut: a completion that ran out of what it was allowed, as far as it got.
    cut = Completion(text, "length", len(logprobs), tuple(logprobs), reasoning or None)
    return Generation((cut,), prompt_tokens), True


@contextlib.asynccontextmanager
async def _closing(events: AsyncIterator[StreamEvent]) -> AsyncIterator[None]:
    """Close the stream when the block ends, however it ends: its request ends with it."""
    try:
        yield
    finally:
        if isinstance(events, AsyncGenerator):
            await events.aclose()
