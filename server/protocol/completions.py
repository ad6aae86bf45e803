"""`POST /v1/completions`: the request, and the response that is also each stream chunk."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from backends.base import FinishReason, SamplingParams, TextPrompt, TokenPrompt
from server.protocol.common import GenerationRequest, ReasoningExtensions, UsageInfo
from server.protocol.errors import InvalidRequest
from strategies.base import StrategyRequest
from strategies.limits import Limits

__all__ = ["CompletionChoice", "CompletionLogprobs", "CompletionRequest", "CompletionResponse"]


class CompletionRequest(GenerationRequest):
    """`POST /v1/completions`."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    max_tokens: int | None = Field(
        default=None, ge=0, description="OpenAI's default is 16; 0 (with echo) scores the prompt."
    )
    suffix: str | None = None

    def plain_prompts(self) -> list[TextPrompt | TokenPrompt] | None:
        """The prompts of a plain-model request (echo, `max_tokens` 0, token ids, or several
        prompts: what evaluation harnesses send), which the backend answers directly; None for
        a request that a strategy answers."""
        prompt = self.prompt
        plain = (
            self.echo
            or self.max_tokens == 0
            or (isinstance(prompt, list) and (len(prompt) != 1 or not isinstance(prompt[0], str)))
        )
        if not plain:
            return None
        if self.max_tokens == 0 and not self.echo:
            raise InvalidRequest("max_tokens 0 scores the prompt and needs echo", "max_tokens")
        if self.reasoning_strategy != "none":
            raise InvalidRequest(
                "echo, max_tokens 0, token-id prompts and batches of prompts ask the model "
                "itself (prompt scoring, evaluation); they take no reasoning_strategy but none",
                "reasoning_strategy",
            )
        if self.stream:
            raise InvalidRequest(
                "echo, max_tokens 0, token-id prompts and batches of prompts are not streamed",
                "stream",
            )
        if isinstance(prompt, str):
            return [TextPrompt(prompt)]
        if not prompt:
            raise InvalidRequest("prompt must not be empty", "prompt")
        ids = [item for item in prompt if isinstance(item, int)]
        if len(ids) == len(prompt):
            return [TokenPrompt(tuple(ids))]
        prompts: list[TextPrompt | TokenPrompt] = []
        for item in prompt:
            if isinstance(item, str):
                prompts.append(TextPrompt(item))
            elif isinstance(item, list):
                prompts.append(TokenPrompt(tuple(item)))
            else:
                raise InvalidRequest("prompt mixes token ids with texts", "prompt")
        return prompts

    def plain_sampling(self, limits: Limits) -> SamplingParams:
        """How to sample after each prompt of a plain-model request."""
        max_tokens = self.max_tokens if self.max_tokens is not None else 16
        return self._sampling(max_tokens, limits, self.logprobs)

    def to_strategy_request(self, limits: Limits) -> StrategyRequest:
        """Validate against the server's limits and convert for the strategies."""
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
            self.thinking_token_budget,
        )


class CompletionLogprobs(BaseModel):
    """`choices[].logprobs` of a text completion."""

    tokens: list[str]
    # A prompt's first token, echoed, has neither: nothing comes before it.
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
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
