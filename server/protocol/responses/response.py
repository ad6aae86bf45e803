"""The `response` object of `POST /v1/responses`: its output items and its usage.

It is the body of a non-streamed answer, and what a stream's lifecycle events carry.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from server.protocol.common import ReasoningExtensions

__all__ = [
    "FunctionCallItem",
    "InputTokensDetails",
    "OutputItem",
    "OutputMessage",
    "OutputText",
    "OutputTokensDetails",
    "ReasoningItem",
    "ReasoningText",
    "ResponseUsage",
    "ResponsesResponse",
]


class OutputText(BaseModel):
    """A text part of an output message."""

    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class ReasoningText(BaseModel):
    """The text part of a reasoning item."""

    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputMessage(BaseModel):
    """The answer: an assistant message with one text part."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: ItemStatus
    content: list[OutputText]


class ReasoningItem(BaseModel):
    """The chosen candidate's visible reasoning, as vLLM returns a reasoning model's."""

    id: str
    type: Literal["reasoning"] = "reasoning"
    summary: list[Any] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    status: ItemStatus


class FunctionCallItem(BaseModel):
    """A call the answer made; a `function_call_output` item answers it by its `call_id`."""

    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


OutputItem = OutputMessage | ReasoningItem | FunctionCallItem


class InputTokensDetails(BaseModel):
    """How input tokens split; this server does not see the model server's prefix cache."""

    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    """How output tokens split; `reasoning_tokens` are those not in the returned answer."""

    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    """Usage in the Responses API's shape, plus our `verifier_tokens`."""

    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int
    verifier_tokens: int = 0


ResponseStatus = Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]


class ResponsesResponse(ReasoningExtensions):
    """The `response` object: the body of a non-streamed answer, and what lifecycle events
    carry; our extensions (`reasoning_trace`, ...) only when set."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    model: str
    status: ResponseStatus
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, str] | None = None
    instructions: str | None = None
    max_output_tokens: int
    metadata: dict[str, str] | None = None
    output: list[OutputItem]
    parallel_tool_calls: bool = True
    previous_response_id: None = None
    reasoning: dict[str, Any] | None = None
    store: bool = False
    temperature: float
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_p: float
    truncation: str = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
