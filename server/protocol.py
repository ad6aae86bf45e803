"""OpenAI wire models, named and ordered as OpenAI names them, with our extensions grouped below.

Requests convert themselves into a `StrategyRequest`; responses and stream chunks are built
from a `StrategyResult`, so serving code never reads raw dicts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.backends.base import (
    ChatMessage,
    ChatPrompt,
    FinishReason,
    SamplingParams,
    TextPrompt,
    TokenLogprob,
)
from server.settings import LimitsSettings
from strategies.base import Choice, ChoiceDelta, ReasoningEffort, StrategyRequest, StrategyResult

__all__ = [
    "EFFORT_MAX_TOKENS",
    "ChatChoiceLogprobs",
    "ChatChunks",
    "ChatCompletionChoice",
    "ChatCompletionMessageParam",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatCompletionStreamChoice",
    "ChatCompletionStreamResponse",
    "ChatLogprob",
    "ChatMessageOut",
    "CompletionChoice",
    "CompletionChunks",
    "CompletionLogprobs",
    "CompletionRequest",
    "CompletionResponse",
    "CompletionStreamResponse",
    "CompletionTokensDetails",
    "DeltaMessage",
    "ErrorInfo",
    "ErrorResponse",
    "InvalidRequest",
    "ModelCard",
    "ModelList",
    "OpenAIBaseModel",
    "ReasoningExtensions",
    "StreamOptions",
    "TextContentPart",
    "TopLogprob",
    "UsageInfo",
    "new_request_id",
]


class InvalidRequest(ValueError):
    """A request that parses but asks for something we can't do, with the field to blame."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class OpenAIBaseModel(BaseModel):
    """Accepts fields it does not know, as OpenAI's API does, so newer clients keep working.

    An explicit `null` means "the default", as in OpenAI's API (some clients send every field).
    """

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        defaulted = {
            name
            for name, info in cls.model_fields.items()
            if not info.is_required() and info.get_default(call_default_factory=True) is not None
        }
        return {k: v for k, v in data.items() if not (v is None and k in defaulted)}


# Errors


class ErrorInfo(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorInfo


# Models


class ModelCard(BaseModel):
    """One entry of `GET /v1/models`."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "ttc-server"


class ModelList(BaseModel):
    """The body of `GET /v1/models`."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


# Shared request pieces

# The token budget `reasoning_effort` gives a request that sets no max_tokens of its own.
EFFORT_MAX_TOKENS: dict[str, int] = {"low": 256, "medium": 1024, "high": 4096}

# OpenAI fields the gateway cannot honour, with the values that mean "not used".
_UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "tools": lambda v: not v,
    "functions": lambda v: not v,
    "tool_choice": lambda v: v in (None, "none"),
    "function_call": lambda v: v in (None, "none"),
    "response_format": lambda v: v is None or (isinstance(v, dict) and v.get("type") == "text"),
    "logit_bias": lambda v: not v,
    "frequency_penalty": lambda v: v in (None, 0, 0.0),
    "presence_penalty": lambda v: v in (None, 0, 0.0),
    "best_of": lambda v: v in (None, 1),
}


class StreamOptions(OpenAIBaseModel):
    """`stream_options`."""

    include_usage: bool = False


class _SamplingFields(OpenAIBaseModel):
    """Fields both endpoints share, in OpenAI's order, then ours."""

    model: str
    n: int = Field(default=1, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    user: str | None = None

    reasoning_effort: ReasoningEffort | None = Field(
        default=None, description="OpenAI's effort level; strategies map it to a budget."
    )
    reasoning_strategy: str = Field(
        default="none", description="Which test-time compute strategy answers the request."
    )
    reasoning_params: dict[str, Any] | None = Field(
        default=None, description="Parameters of the chosen strategy, validated by it."
    )

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> _SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    def unsupported_field(self) -> str | None:
        """An OpenAI field set to something we cannot honour (it would change the answer)."""
        extra = self.model_extra or {}
        for name, is_default in _UNSUPPORTED.items():
            if name in extra and not is_default(extra[name]):
                return name
        return None

    def ignored_fields(self) -> list[str]:
        """Fields we do not know and leave alone, as vLLM does; worth a log line."""
        return sorted(name for name in self.model_extra or {} if name not in _UNSUPPORTED)

    def _stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if any(not s for s in stops):
            raise InvalidRequest("stop strings must not be empty", "stop")
        return stops

    def _sampling(
        self, max_tokens: int, limits: LimitsSettings, logprobs: int | None
    ) -> SamplingParams:
        if self.n > limits.max_n:
            raise InvalidRequest(f"n is {self.n}; this server allows at most {limits.max_n}", "n")
        if max_tokens > limits.max_tokens:
            raise InvalidRequest(
                f"max_tokens is {max_tokens}; this server allows at most {limits.max_tokens}",
                "max_tokens",
            )
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            n=self.n,
            stop=self._stops(),
            seed=self.seed,
            logprobs=logprobs,
        )

    def _default_max_tokens(self, default: int, limits: LimitsSettings) -> int:
        if self.reasoning_effort is None:
            return default
        return min(EFFORT_MAX_TOKENS[self.reasoning_effort], limits.max_tokens)

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage


# Chat completions


class TextContentPart(OpenAIBaseModel):
    """A text part of a multi-part message."""

    type: Literal["text"]
    text: str


class ChatCompletionMessageParam(OpenAIBaseModel):
    """One message of a conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextContentPart] | None = None
    name: str | None = None

    def to_message(self) -> ChatMessage:
        """The message as the backend sees it: one role, one text."""
        if isinstance(self.content, list):
            text = "".join(part.text for part in self.content)
        else:
            text = self.content or ""
        # Chat templates know `system`; OpenAI's newer `developer` role means the same.
        return ChatMessage("system" if self.role == "developer" else self.role, text)


class ChatCompletionRequest(_SamplingFields):
    """`POST /v1/chat/completions`."""

    messages: list[ChatCompletionMessageParam] = Field(min_length=1)
    logprobs: bool = False
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    def to_strategy_request(self, limits: LimitsSettings) -> StrategyRequest:
        """Validate against the server's limits and convert for the strategies."""
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequest("top_logprobs requires logprobs to be true", "top_logprobs")
        max_tokens = (
            self.max_completion_tokens
            or self.max_tokens
            or self._default_max_tokens(limits.default_max_tokens, limits)
        )
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        messages = tuple(m.to_message() for m in self.messages)
        # A conversation that ends with an assistant turn is a prefix to continue, as in vLLM.
        prompt = ChatPrompt(messages, continue_final_message=messages[-1].role == "assistant")
        return StrategyRequest(
            prompt, self._sampling(max_tokens, limits, logprobs), self.reasoning_effort
        )


class ChatMessageOut(BaseModel):
    """The assistant's message; `reasoning` is the chosen candidate's visible reasoning."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning: str | None = None


class TopLogprob(BaseModel):
    """An alternative token at one position."""

    token: str
    logprob: float
    bytes: list[int]


class ChatLogprob(TopLogprob):
    """A generated token with its alternatives."""

    top_logprobs: list[TopLogprob]


class ChatChoiceLogprobs(BaseModel):
    """`choices[].logprobs` of a chat completion."""

    content: list[ChatLogprob]

    @classmethod
    def build(cls, logprobs: tuple[TokenLogprob, ...] | None) -> ChatChoiceLogprobs | None:
        """OpenAI's shape from the backend's, or None when none were asked for."""
        if logprobs is None:
            return None
        return cls(
            content=[
                ChatLogprob(
                    token=lp.token,
                    logprob=lp.logprob,
                    bytes=list(lp.token.encode()),
                    top_logprobs=[
                        TopLogprob(token=t, logprob=v, bytes=list(t.encode())) for t, v in lp.top
                    ],
                )
                for lp in logprobs
            ]
        )


class CompletionTokensDetails(BaseModel):
    """How completion tokens split; `reasoning_tokens` are those not in any returned content."""

    reasoning_tokens: int = 0


class UsageInfo(BaseModel):
    """Token counts reported by the model servers, summed over every call of the request.

    `prompt_tokens`, `completion_tokens` and `total_tokens` are the generator's, as OpenAI's;
    `verifier_tokens` (our extension) counts every token verifiers processed (reward-model
    inputs, judge prompts and answers), so generator and verifier cost can be priced apart.
    """

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails
    verifier_tokens: int = 0

    @classmethod
    def build(cls, result: StrategyResult) -> UsageInfo:
        """Usage of a finished run."""
        usage = result.usage
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.prompt_tokens + usage.completion_tokens,
            completion_tokens_details=CompletionTokensDetails(
                reasoning_tokens=result.reasoning_tokens
            ),
            verifier_tokens=usage.verifier_tokens,
        )


class ChatCompletionChoice(BaseModel):
    """One answer of a chat completion."""

    index: int
    message: ChatMessageOut
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: FinishReason


class ReasoningExtensions(BaseModel):
    """Our top-level response fields; each is left out of the body when it is None."""

    reasoning_trace: dict[str, Any] | None = Field(
        default=None, description="The strategy's trace, present only when asked for."
    )
    reasoning_fallback: str | None = Field(
        default=None, description="Set when a verifier failed and another strategy answered."
    )
    reasoning_stopped_early: str | None = Field(
        default=None, description="Why a search stopped with its best answer so far."
    )


def _response_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class ChatCompletionResponse(ReasoningExtensions):
    """The body of a non-streamed chat completion."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: UsageInfo

    @classmethod
    def build(
        cls, result: StrategyResult, model: str, request_id: str, with_trace: bool
    ) -> ChatCompletionResponse:
        """The response for a finished run."""
        return cls(
            id=request_id,
            created=int(time.time()),
            model=model,
            choices=[
                ChatCompletionChoice(
                    index=i,
                    message=ChatMessageOut(content=c.content, reasoning=c.reasoning),
                    logprobs=ChatChoiceLogprobs.build(c.logprobs),
                    finish_reason=c.finish_reason,
                )
                for i, c in enumerate(result.choices)
            ],
            usage=UsageInfo.build(result),
            reasoning_trace=dict(result.trace) if with_trace and result.trace else None,
            reasoning_fallback=result.fallback,
            reasoning_stopped_early=result.stopped_early,
        )


class DeltaMessage(BaseModel):
    """The new part of a streamed message."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning: str | None = None


class ChatCompletionStreamChoice(BaseModel):
    """One choice's piece of a stream chunk."""

    index: int
    delta: DeltaMessage
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionStreamResponse(ReasoningExtensions):
    """A `chat.completion.chunk`."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionStreamChoice]
    usage: UsageInfo | None = None


# Completions


class CompletionRequest(_SamplingFields):
    """`POST /v1/completions`."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=5)
    max_tokens: int | None = Field(default=None, ge=1, description="OpenAI's default is 16.")
    suffix: str | None = None

    def to_strategy_request(self, limits: LimitsSettings) -> StrategyRequest:
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

    @classmethod
    def build(
        cls, logprobs: tuple[TokenLogprob, ...] | None, offset: int = 0
    ) -> CompletionLogprobs | None:
        """OpenAI's legacy shape; offsets count characters from `offset`."""
        if logprobs is None:
            return None
        offsets = []
        for lp in logprobs:
            offsets.append(offset)
            offset += len(lp.token)
        return cls(
            tokens=[lp.token for lp in logprobs],
            token_logprobs=[lp.logprob for lp in logprobs],
            top_logprobs=[dict(lp.top) for lp in logprobs],
            text_offset=offsets,
        )


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

    @classmethod
    def build(
        cls, result: StrategyResult, model: str, request_id: str, with_trace: bool
    ) -> CompletionResponse:
        """The response for a finished run."""
        return cls(
            id=request_id,
            created=int(time.time()),
            model=model,
            choices=[_completion_choice(i, c) for i, c in enumerate(result.choices)],
            usage=UsageInfo.build(result),
            reasoning_trace=dict(result.trace) if with_trace and result.trace else None,
            reasoning_fallback=result.fallback,
            reasoning_stopped_early=result.stopped_early,
        )


CompletionStreamResponse = CompletionResponse


def _completion_choice(index: int, choice: Choice) -> CompletionChoice:
    return CompletionChoice(
        index=index,
        text=choice.content,
        logprobs=CompletionLogprobs.build(choice.logprobs),
        finish_reason=choice.finish_reason,
        reasoning=choice.reasoning,
    )


def new_request_id(kind: Literal["chat", "completion"]) -> str:
    """An id in OpenAI's style: `chatcmpl-...` or `cmpl-...`."""
    return _response_id("chatcmpl" if kind == "chat" else "cmpl")


# Stream chunk builders: one per endpoint, so serving code streams either the same way.


class _Chunks:
    """What both endpoints' chunk builders share: the response's identity and its last chunk."""

    def __init__(self, request_id: str, model: str) -> None:
        self.request_id = request_id
        self.model = model
        self.created = int(time.time())

    def _chunk(self, choices: list[Any], **extra: Any) -> BaseModel:
        raise NotImplementedError

    def tail(self, usage: UsageInfo | None, result: StrategyResult, with_trace: bool) -> BaseModel:
        """The last chunk, with no choices: usage, the trace if asked, fallback and stop notes."""
        return self._chunk(
            [],
            usage=usage,
            reasoning_trace=dict(result.trace) if with_trace and result.trace else None,
            reasoning_fallback=result.fallback,
            reasoning_stopped_early=result.stopped_early,
        )


class ChatChunks(_Chunks):
    """Builds the `chat.completion.chunk`s of one streamed response."""

    def _chunk(self, choices: list[Any], **extra: Any) -> BaseModel:
        return ChatCompletionStreamResponse(
            id=self.request_id, created=self.created, model=self.model, choices=choices, **extra
        )

    def opening(self, n: int) -> list[BaseModel]:
        """The first chunk of each choice announces the assistant role, as OpenAI's do."""
        return [
            self._chunk(
                [
                    ChatCompletionStreamChoice(
                        index=i, delta=DeltaMessage(role="assistant", content="")
                    )
                ]
            )
            for i in range(n)
        ]

    def delta(self, delta: ChoiceDelta) -> BaseModel:
        """New text of one choice."""
        message = DeltaMessage(content=delta.content or None, reasoning=delta.reasoning or None)
        logprobs = ChatChoiceLogprobs.build(delta.logprobs)
        return self._chunk(
            [ChatCompletionStreamChoice(index=delta.index, delta=message, logprobs=logprobs)]
        )

    def finish(self, index: int, reason: FinishReason) -> BaseModel:
        """The chunk that ends one choice."""
        return self._chunk(
            [ChatCompletionStreamChoice(index=index, delta=DeltaMessage(), finish_reason=reason)]
        )


class CompletionChunks(_Chunks):
    """Builds the `text_completion` chunks of one streamed response."""

    def __init__(self, request_id: str, model: str) -> None:
        super().__init__(request_id, model)
        self._offsets: dict[int, int] = {}

    def _chunk(self, choices: list[Any], **extra: Any) -> BaseModel:
        return CompletionResponse(
            id=self.request_id, created=self.created, model=self.model, choices=choices, **extra
        )

    def opening(self, n: int) -> list[BaseModel]:
        """Text completions announce nothing before their first text."""
        return []

    def delta(self, delta: ChoiceDelta) -> BaseModel:
        """New text of one choice; logprob offsets continue from the choice's earlier text."""
        offset = self._offsets.get(delta.index, 0)
        self._offsets[delta.index] = offset + len(delta.content)
        choice = CompletionChoice(
            index=delta.index,
            text=delta.content,
            logprobs=CompletionLogprobs.build(delta.logprobs, offset),
            finish_reason=None,
            reasoning=delta.reasoning or None,
        )
        return self._chunk([choice])

    def finish(self, index: int, reason: FinishReason) -> BaseModel:
        """The chunk that ends one choice."""
        return self._chunk([CompletionChoice(index=index, text="", finish_reason=reason)])
