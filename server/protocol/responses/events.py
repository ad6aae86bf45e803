"""The stream events of `POST /v1/responses`, each named by its `type` and numbered by
`sequence_number`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from server.protocol.responses.response import (
    OutputItem,
    OutputText,
    ReasoningText,
    ResponsesResponse,
)

__all__ = [
    "ResponseContentPartEvent",
    "ResponseErrorEvent",
    "ResponseEvent",
    "ResponseFunctionCallArgumentsDeltaEvent",
    "ResponseFunctionCallArgumentsDoneEvent",
    "ResponseLifecycleEvent",
    "ResponseOutputItemEvent",
    "ResponseReasoningTextDeltaEvent",
    "ResponseReasoningTextDoneEvent",
    "ResponseTextDeltaEvent",
    "ResponseTextDoneEvent",
]


class ResponseLifecycleEvent(BaseModel):
    """`response.created`, `response.in_progress`, `response.completed`, `response.failed`."""

    type: str
    sequence_number: int
    response: ResponsesResponse


class ResponseOutputItemEvent(BaseModel):
    """`response.output_item.added` and `response.output_item.done`."""

    type: str
    sequence_number: int
    output_index: int
    item: OutputItem


class ResponseContentPartEvent(BaseModel):
    """`response.content_part.added` and `response.content_part.done`."""

    type: str
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: OutputText | ReasoningText


class ResponseTextDeltaEvent(BaseModel):
    """`response.output_text.delta`."""

    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any] = Field(default_factory=list)


class ResponseTextDoneEvent(BaseModel):
    """`response.output_text.done`."""

    type: Literal["response.output_text.done"] = "response.output_text.done"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any] = Field(default_factory=list)


class ResponseReasoningTextDeltaEvent(BaseModel):
    """`response.reasoning_text.delta`."""

    type: Literal["response.reasoning_text.delta"] = "response.reasoning_text.delta"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str


class ResponseReasoningTextDoneEvent(BaseModel):
    """`response.reasoning_text.done`."""

    type: Literal["response.reasoning_text.done"] = "response.reasoning_text.done"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str


class ResponseFunctionCallArgumentsDeltaEvent(BaseModel):
    """`response.function_call_arguments.delta`: a piece of a call's arguments."""

    type: Literal["response.function_call_arguments.delta"] = (
        "response.function_call_arguments.delta"
    )
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class ResponseFunctionCallArgumentsDoneEvent(BaseModel):
    """`response.function_call_arguments.done`: a call's whole arguments (and, as vLLM's, its
    name)."""

    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    sequence_number: int
    item_id: str
    output_index: int
    name: str
    arguments: str


class ResponseErrorEvent(BaseModel):
    """`error`: the run failed after the stream began; OpenAI's error fields, flat."""

    type: Literal["error"] = "error"
    sequence_number: int
    code: str | None
    message: str
    param: str | None


ResponseEvent = (
    ResponseLifecycleEvent
    | ResponseOutputItemEvent
    | ResponseContentPartEvent
    | ResponseTextDeltaEvent
    | ResponseTextDoneEvent
    | ResponseReasoningTextDeltaEvent
    | ResponseReasoningTextDoneEvent
    | ResponseFunctionCallArgumentsDeltaEvent
    | ResponseFunctionCallArgumentsDoneEvent
    | ResponseErrorEvent
)
