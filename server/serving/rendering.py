"""What every endpoint's rendering shares: the response's identity, usage, our extensions, and
how a stream is framed.

A `Rendering` turns a strategy's result into one endpoint's wire shapes: the whole body of a
non-streamed response, or the Server-Sent Events of a stream (`sse_opening`, `sse_delta`,
`sse_finish`, `sse_closing`, then `sse_end`; `sse_error` when the run fails). Chat and text
completions stream one `data:` chunk per piece (`ChunkRendering`); the Responses API streams
typed events (`server.serving.responses`).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel

from backends.base import FinishReason
from server.protocol.common import CompletionTokensDetails, ReasoningExtensions, UsageInfo
from server.protocol.errors import ErrorResponse
from strategies.base import ChoiceDelta, StrategyResult

__all__ = ["ChunkRendering", "Rendering", "sse", "usage_of"]


def usage_of(result: StrategyResult) -> UsageInfo:
    """The usage of a finished run, in OpenAI's shape plus `verifier_tokens`."""
    usage = result.usage
    return UsageInfo(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=result.reasoning_tokens),
        verifier_tokens=usage.verifier_tokens,
    )


def sse(data: dict[str, Any], event: str | None = None) -> str:
    """One Server-Sent Event carrying `data` as compact JSON, named `event` when given."""
    named = f"event: {event}\n" if event is not None else ""
    return f"{named}data: {json.dumps(data, separators=(',', ':'))}\n\n"


class Rendering(ABC):
    """One response of one endpoint, as a whole JSON body or as Server-Sent Events."""

    def __init__(self, request_id: str, model: str, with_trace: bool) -> None:
        self.request_id = request_id
        self.model = model
        self.with_trace = with_trace
        # Every chunk of a stream carries the time the stream began; a whole body, the time it
        # was built.
        self.created = int(time.time())

    @abstractmethod
    def body(self, result: StrategyResult) -> dict[str, Any]:
        """The JSON body of a non-streamed response."""

    @abstractmethod
    def sse_opening(self, n: int) -> list[str]:
        """The events a stream opens with, before any text."""

    @abstractmethod
    def sse_delta(self, delta: ChoiceDelta) -> list[str]:
        """The events carrying new text of one choice."""

    @abstractmethod
    def sse_finish(self, index: int, reason: FinishReason) -> list[str]:
        """The events that end one choice."""

    @abstractmethod
    def sse_closing(self, result: StrategyResult, include_usage: bool) -> list[str]:
        """The events after every choice has finished: usage, extensions, the final state."""

    @abstractmethod
    def sse_error(self, error: ErrorResponse) -> list[str]:
        """The events that report a run which failed after the stream began."""

    @abstractmethod
    def sse_end(self) -> list[str]:
        """What ends the stream, whether the run succeeded or failed."""

    def extensions(self, result: StrategyResult) -> dict[str, Any]:
        """Our top-level fields that `result` sets: the trace (when asked), fallback, early stop."""
        fields = {
            "reasoning_trace": dict(result.trace) if self.with_trace and result.trace else None,
            "reasoning_fallback": result.fallback,
            "reasoning_stopped_early": result.stopped_early,
        }
        return {name: value for name, value in fields.items() if value is not None}


class ChunkRendering(Rendering):
    """A response with `choices`, whole or as one `data:` chunk per piece, ended by `[DONE]`
    (chat and text completions).

    An endpoint names its body and chunk models and says how a result's choices and a stream's
    pieces look; the identity, usage and extensions around them are the same everywhere.
    """

    body_model: ClassVar[type[BaseModel]]
    chunk_model: ClassVar[type[BaseModel]]

    @abstractmethod
    def choices(self, result: StrategyResult) -> list[Any]:
        """The choices of a non-streamed response."""

    @abstractmethod
    def opening(self, n: int) -> Sequence[BaseModel]:
        """The chunks a stream opens with, before any text."""

    @abstractmethod
    def delta(self, delta: ChoiceDelta) -> BaseModel:
        """The chunk carrying new text of one choice."""

    @abstractmethod
    def finish(self, index: int, reason: FinishReason) -> BaseModel:
        """The chunk that ends one choice."""

    def response(self, result: StrategyResult) -> BaseModel:
        """The body of a non-streamed response."""
        return self.body_model(
            id=self.request_id,
            created=int(time.time()),
            model=self.model,
            choices=self.choices(result),
            usage=usage_of(result),
            **self.extensions(result),
        )

    def chunk(self, choices: list[Any], **fields: Any) -> BaseModel:
        """A stream chunk of this endpoint with these choices and top-level fields."""
        return self.chunk_model(
            id=self.request_id, created=self.created, model=self.model, choices=choices, **fields
        )

    def body(self, result: StrategyResult) -> dict[str, Any]:
        """The JSON body of a non-streamed response; extensions not set are left out."""
        response = self.response(result)
        unset = {
            name for name in ReasoningExtensions.model_fields if getattr(response, name) is None
        }
        return response.model_dump(exclude=unset)

    def tail(self, result: StrategyResult, include_usage: bool) -> BaseModel | None:
        """The stream's last chunk, with no choices: usage when asked, and our extensions; None
        when it would carry nothing."""
        extensions = self.extensions(result)
        if not include_usage and not extensions:
            return None
        return self.chunk([], usage=usage_of(result) if include_usage else None, **extensions)

    def sse_opening(self, n: int) -> list[str]:
        return [_chunk(chunk) for chunk in self.opening(n)]

    def sse_delta(self, delta: ChoiceDelta) -> list[str]:
        return [_chunk(self.delta(delta))]

    def sse_finish(self, index: int, reason: FinishReason) -> list[str]:
        return [_chunk(self.finish(index, reason))]

    def sse_closing(self, result: StrategyResult, include_usage: bool) -> list[str]:
        tail = self.tail(result, include_usage)
        return [] if tail is None else [_chunk(tail)]

    def sse_error(self, error: ErrorResponse) -> list[str]:
        # The whole error object, `param` and `code` included even when null, as a non-streamed
        # error body has them.
        return [sse(error.model_dump())]

    def sse_end(self) -> list[str]:
        return ["data: [DONE]\n\n"]


def _chunk(chunk: BaseModel) -> str:
    return sse(chunk.model_dump(exclude_none=True))
