"""`POST /v1/chat/completions`: the request, the response, and its stream chunks."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from backends.base import ChatMessage, ChatPrompt, FinishReason
from server.protocol.common import (
    GenerationRequest,
    OpenAIBaseModel,
    ReasoningExtensions,
    UsageInfo,
    effort_kwargs,
    text_of,
)
from server.protocol.errors import InvalidRequest
from server.protocol.tools import (
    ChatCompletionToolParam,
    DeltaToolCall,
    ToolCallOut,
    ToolCallParam,
    ToolChoiceParam,
    tools_of,
)
from strategies.base import StrategyRequest
from strategies.limits import Limits

__all__ = [
    "ChatChoiceLogprobs",
    "ChatCompletionChoice",
    "ChatCompletionMessageParam",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatCompletionStreamChoice",
    "ChatCompletionStreamResponse",
    "ChatLogprob",
    "ChatMessageOut",
    "DeltaMessage",
    "ContentPart",
    "TopLogprob",
]


class ContentPart(OpenAIBaseModel):
    """A part of a multi-part message: text, or a kind (`image_url`, `input_audio`, `file`)
    this text-only server refuses with a 400 naming the part."""

    type: str
    text: str | None = None

    @model_validator(mode="after")
    def _text_has_text(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs text")
        return self


class ChatCompletionMessageParam(OpenAIBaseModel):
    """One message of a conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = Field(default=None, validate_default=True)
    name: str | None = None
    reasoning: str | None = Field(
        default=None, description="An assistant turn's reasoning, as a response returned it."
    )
    reasoning_content: str | None = Field(
        default=None,
        description="The older name of `reasoning`, which DeepSeek-style clients send.",
    )
    tool_calls: list[ToolCallParam] | None = Field(
        default=None, description="The calls an assistant turn made."
    )
    tool_call_id: str | None = Field(
        default=None, description="The call a tool turn answers (required there)."
    )

    @field_validator("reasoning", "reasoning_content")
    @classmethod
    def _reasoning_only_from_assistant(
        cls, reasoning: str | None, info: ValidationInfo
    ) -> str | None:
        if reasoning is not None and info.data.get("role") != "assistant":
            raise ValueError("only an assistant message carries reasoning")
        return reasoning

    @field_validator("content")
    @classmethod
    def _content_unless_assistant(
        cls, content: str | list[ContentPart] | None, info: ValidationInfo
    ) -> str | list[ContentPart] | None:
        # OpenAI lets only an assistant turn (one that called tools) go without content.
        if content is None and info.data.get("role", "assistant") != "assistant":
            raise ValueError(f"a {info.data['role']} message needs content")
        return content

    def to_message(self, param: str) -> ChatMessage:
        """The message as the backend sees it: one role, one text; `param` names it in errors."""
        if isinstance(self.content, list):
            parts = [(part.type, part.text) for part in self.content]
            text = text_of(parts, ("text",), f"{param}.content")
        else:
            text = self.content or ""
        # Chat templates know `system`; OpenAI's newer `developer` role means the same.
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(
            role,
            text,
            reasoning=self.reasoning or self.reasoning_content,
            tool_calls=tuple(c.to_call() for c in self.tool_calls or ()),
            tool_call_id=self.tool_call_id,
        )


# What a chat template is rendered with by the server itself, never by a client's kwargs.
_RENDERING_ARGUMENTS = frozenset(
    {
        "messages",
        "conversation",
        "tools",
        "documents",
        "chat_template",
        "add_generation_prompt",
        "continue_final_message",
        "tokenize",
        "return_dict",
        "return_assistant_tokens_mask",
    }
)


class ChatCompletionRequest(GenerationRequest):
    """`POST /v1/chat/completions`."""

    messages: list[ChatCompletionMessageParam] = Field(min_length=1)
    logprobs: bool = False
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[ChatCompletionToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = Field(
        default=None, description="vLLM's: arguments the chat template is rendered with."
    )
    include_reasoning: bool = Field(
        default=True, description="vLLM's: false leaves the thinking out of the response."
    )
    add_generation_prompt: bool | None = Field(
        default=None,
        description="vLLM's; follows from the last turn (an assistant one is continued).",
    )
    continue_final_message: bool | None = Field(
        default=None,
        description="vLLM's; follows from the last turn (an assistant one is continued).",
    )

    def template_kwargs(self) -> dict[str, Any]:
        """What the chat template is rendered with, merged as vLLM merges it: the request's
        `reasoning_effort` (and `enable_thinking` unless `none`, for templates that ask), under
        the client's own `chat_template_kwargs`."""
        for name in self.chat_template_kwargs or {}:
            if name in _RENDERING_ARGUMENTS:
                raise InvalidRequest(
                    f"chat_template_kwargs may not set {name!r}: the server renders the "
                    "conversation with it",
                    "chat_template_kwargs",
                )
        return effort_kwargs(self.reasoning_effort) | (self.chat_template_kwargs or {})

    def to_strategy_request(self, limits: Limits) -> StrategyRequest:
        """Validate against the server's limits and convert for the strategies."""
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequest("top_logprobs requires logprobs to be true", "top_logprobs")
        max_tokens = (
            self.max_completion_tokens
            or self.max_tokens
            or self._default_max_tokens(limits.default_max_tokens, limits)
        )
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        for i, m in enumerate(self.messages):
            if m.role == "tool" and m.tool_call_id is None:
                raise InvalidRequest(
                    "a tool message needs the tool_call_id of the call it answers",
                    f"messages.{i}.tool_call_id",
                )
        messages = tuple(m.to_message(f"messages.{i}") for i, m in enumerate(self.messages))
        tools = tools_of(self.tools, self.tool_choice, self.parallel_tool_calls)
        # A conversation that ends with an assistant turn is a prefix to continue, as in vLLM
        # (not one that ended in calls: their results are still to come).
        last = messages[-1]
        continues = last.role == "assistant" and not last.tool_calls
        for name, asked, implied in (
            ("continue_final_message", self.continue_final_message, continues),
            ("add_generation_prompt", self.add_generation_prompt, not continues),
        ):
            if asked is not None and asked != implied:
                raise InvalidRequest(
                    f"{name} follows from the conversation here: a last assistant turn (without "
                    f"tool calls) is continued, any other is answered; this one implies {name}="
                    f"{str(implied).lower()}",
                    name,
                )
        prompt = ChatPrompt(
            messages,
            continue_final_message=continues,
            tools=tools,
            template_kwargs=self.template_kwargs(),
        )
        return StrategyRequest(
            prompt,
            self._sampling(max_tokens, limits, logprobs),
            self.reasoning_effort,
            self.thinking_token_budget,
        )


class ChatMessageOut(BaseModel):
    """The assistant's message; `reasoning` is the chosen candidate's visible reasoning, mirrored
    as `reasoning_content` for clients that read the older name; `tool_calls` the calls it made
    (its `content` is then null unless it wrote text too)."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning: str | None = None
    reasoning_content: str | None = None
    # As OpenAI's: a message that made no calls has no `tool_calls` field at all.
    tool_calls: list[ToolCallOut] = Field(default_factory=list, exclude_if=lambda calls: not calls)


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


class ChatCompletionChoice(BaseModel):
    """One answer of a chat completion."""

    index: int
    message: ChatMessageOut
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: FinishReason


class ChatCompletionResponse(ReasoningExtensions):
    """The body of a non-streamed chat completion."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: UsageInfo


class DeltaMessage(BaseModel):
    """The new part of a streamed message."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


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
