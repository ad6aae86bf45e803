"""`POST /v1/completions`: the request, and the response that is also each stream chunk."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from backends.base import FinishReason, TextPrompt
from server.protocol.common import GenerationRequest, ReasoningExtensions, UsageInfo
from server.protocol.errors import InvalidRequest
from strategies.base import StrategyRequest
from strategies.limits import Limits

__all__ = ["CompletionChoice", "CompletionLogprobs", "CompletionRequest", "CompletionResponse"]


class CompletionRequest(GenerationRequest):
    """`POST /v1/completions`."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=5)
    max_tokens: int | None = Field(default=None, ge=1, description="OpenAI's default is 16.")
    suffix: str | None = None

    def to_strategy_request(self, limits: Limits) -> StrategyRequest:
        """Validate against the server's limits and convert for the strategies."""
        if self.echo:
            raise InvalidRequest("echo is not supported", "echo")
        if self.suffix:
            raise InvalidRequest("suffix is not supported", "suffix")
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1 or not isinstance(prompt[0], str):
                raise InvalidRequest(
                    "prompt must be one string (batches and token ids are not supported)",
                    "prompt",
                )
            prompt = prompt[0]
        assert isinstance(prompt, str)
        return StrategyRequest(
            TextPrompt(prompt),
            self._sampling(
                self.max_tokens or self._default_max_tokens(16, limits), limits, self.logprobs
            ),
            self.reasoning_effort,
        )


class CompletionLogprobs(BaseModel):
    """`choices[].logprobs` of a text completion."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    """One answer of a text completion; `reasoning` is our extension, as on chat messages."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None
    reasoning: str | None = None


class CompletionResponse(ReasoningExtensions):
    """The body of a non-streamed text completion, and each of its stream chunks."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None
