"""Rendering `POST /v1/completions`: the `text_completion` body, which is also each chunk."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from backends.base import FinishReason, TokenLogprob
from server.protocol.completions import CompletionChoice, CompletionLogprobs, CompletionResponse
from server.serving.rendering import ChunkRendering
from strategies.base import ChoiceDelta, StrategyResult

__all__ = ["CompletionRendering", "completion_logprobs"]


def completion_logprobs(
    logprobs: tuple[TokenLogprob, ...] | None, offset: int = 0
) -> CompletionLogprobs | None:
    """OpenAI's legacy shape of the backend's log-probabilities; offsets count characters from
    `offset`. None when none were asked for."""
    if logprobs is None:
        return None
    offsets = []
    for lp in logprobs:
        offsets.append(offset)
        offset += len(lp.token)
    return CompletionLogprobs(
        tokens=[lp.token for lp in logprobs],
        token_logprobs=[lp.logprob for lp in logprobs],
        top_logprobs=[dict(lp.top) for lp in logprobs],
        text_offset=offsets,
    )


class CompletionRendering(ChunkRendering):
    """One text completion, whole or as `text_completion` chunks (the body's model, too)."""

    body_model: ClassVar[type[BaseModel]] = CompletionResponse
    chunk_model: ClassVar[type[BaseModel]] = CompletionResponse

    def __init__(self, request_id: str, model: str, with_trace: bool) -> None:
        super().__init__(request_id, model, with_trace)
        # Where each choice's streamed text has got to, for its logprobs' offsets.
        self._offsets: dict[int, int] = {}

    def choices(self, result: StrategyResult) -> list[CompletionChoice]:
        return [
            CompletionChoice(
                index=i,
                text=c.content,
                logprobs=completion_logprobs(c.logprobs),
                finish_reason=c.finish_reason,
                reasoning=c.reasoning,
            )
            for i, c in enumerate(result.choices)
        ]

    def opening(self, n: int) -> list[BaseModel]:
        # Text completions announce nothing before their first text.
        return []

    def delta(self, delta: ChoiceDelta) -> BaseModel:
        offset = self._offsets.get(delta.index, 0)
        self._offsets[delta.index] = offset + len(delta.content)
        choice = CompletionChoice(
            index=delta.index,
            text=delta.content,
            logprobs=completion_logprobs(delta.logprobs, offset),
            finish_reason=None,
            reasoning=delta.reasoning or None,
        )
        return self.chunk([choice])

    def finish(self, index: int, reason: FinishReason) -> BaseModel:
        return self.chunk([CompletionChoice(index=index, text="", finish_reason=reason)])
