"""What every endpoint's rendering shares: the response's identity, usage, our extensions, and
the stream's last chunk.

A `Rendering` turns a strategy's result into one endpoint's wire shapes: the whole body of a
non-streamed response, or the chunks of a stream (`opening`, `delta`, `finish`, `tail`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel

from backends.base import FinishReason
from server.protocol.common import CompletionTokensDetails, ReasoningExtensions, UsageInfo
from strategies.base import ChoiceDelta, StrategyResult

__all__ = ["Rendering", "usage_of"]


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


class Rendering(ABC):
    """One response of one endpoint, as a whole body or as stream chunks.

    An endpoint names its body and chunk models and says how a result's choices and a stream's
    pieces look; the identity, usage and extensions around them are the same everywhere.
    """

    body_model: ClassVar[type[BaseModel]]
    chunk_model: ClassVar[type[BaseModel]]

    def __init__(self, request_id: str, model: str, with_trace: bool) -> None:
        self.request_id = request_id
        self.model = model
        self.with_trace = with_trace
        # Every chunk of a stream carries the time the stream began; a whole body, the time it
        # was built.
        self.created = int(time.time())

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

    def extensions(self, result: StrategyResult) -> dict[str, Any]:
        """Our top-level fields that `result` sets: the trace (when asked), fallback, early stop."""
        fields = {
            "reasoning_trace": dict(result.trace) if self.with_trace and result.trace else None,
            "reasoning_fallback": result.fallback,
            "reasoning_stopped_early": result.stopped_early,
        }
        return {name: value for name, value in fields.items() if value is not None}

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
