"""Rendering `POST /v1/responses`: the `response` object, and its stream of typed events.

The answer is one assistant message item, after a `reasoning` item when the strategy's chosen
candidate showed reasoning; an answer that called tools has a `function_call` item per call
instead (after its message, if it wrote text too), as vLLM's. A stream opens with
`response.created` and `response.in_progress`; each item is announced
(`response.output_item.added`, then `response.content_part.added` for text), filled
(`response.reasoning_text.delta`, `response.output_text.delta`,
`response.function_call_arguments.delta`) and closed (`...done`, in the reverse order);
`response.completed` carries the whole response with its usage. Every event is named (`event:`)
and numbered (`sequence_number`), as OpenAI's and vLLM's are, and no `[DONE]` follows. As in
vLLM, an answer cut by `max_output_tokens` completes with status `incomplete`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from backends.base import FinishReason, ToolCallDelta
from backends.tool_calls import new_call_id
from server.protocol.common import ReasoningExtensions
from server.protocol.errors import ErrorResponse
from server.protocol.responses.events import (
    ResponseContentPartEvent,
    ResponseErrorEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseLifecycleEvent,
    ResponseOutputItemEvent,
    ResponseReasoningTextDeltaEvent,
    ResponseReasoningTextDoneEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)
from server.protocol.responses.response import (
    FunctionCallItem,
    OutputItem,
    OutputMessage,
    OutputText,
    OutputTokensDetails,
    ReasoningItem,
    ReasoningText,
    ResponsesResponse,
    ResponseStatus,
    ResponseUsage,
)
from server.serving.rendering import Rendering, sse
from strategies.accounting import Usage
from strategies.base import ChoiceDelta, StrategyResult

__all__ = ["ResponsesRendering", "response_usage"]

_EXTENSIONS = frozenset(ReasoningExtensions.model_fields)


def response_usage(result: StrategyResult) -> ResponseUsage:
    """The usage of a finished run in the Responses API's shape, plus `verifier_tokens`."""
    usage = result.usage
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=result.reasoning_tokens),
        verifier_tokens=usage.verifier_tokens,
    )


def _status(reason: FinishReason | None) -> Literal["completed", "incomplete"]:
    return "incomplete" if reason == "length" else "completed"


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


ItemKind = Literal["reasoning", "message", "function_call"]


@dataclass
class _OpenItem:
    """The output item a stream is filling: its kind, id, place and text (a call's arguments)
    so far; a call's `call_id` and `name` too."""

    kind: ItemKind
    id: str
    output_index: int
    text: list[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    call_index: int = -1


class ResponsesRendering(Rendering):
    """One response, whole or as typed events; `echo` holds the request fields it repeats."""

    def __init__(
        self,
        request_id: str,
        model: str,
        with_trace: bool,
        echo: dict[str, Any],
        max_output_tokens: int,
    ) -> None:
        super().__init__(request_id, model, with_trace)
        self.echo = echo
        self.max_output_tokens = max_output_tokens
        self._sequence = 0
        self._done: list[OutputItem] = []
        self._open: _OpenItem | None = None
        # Whether a message or a call was streamed: an answer with neither is an empty message.
        self._has_answer = False
        # The last `response` object rendered whole (the body, or a stream's closing event).
        self.final: dict[str, Any] | None = None

    def response(
        self,
        status: ResponseStatus,
        output: list[OutputItem],
        result: StrategyResult | None = None,
        error: dict[str, Any] | None = None,
    ) -> ResponsesResponse:
        """The `response` object in `status` with `output` (usage and extensions once done)."""
        return ResponsesResponse(
            id=self.request_id,
            created_at=self.created,
            model=self.model,
            status=status,
            error=error,
            incomplete_details={"reason": "max_output_tokens"} if status == "incomplete" else None,
            max_output_tokens=self.max_output_tokens,
            output=output,
            usage=response_usage(result) if result is not None else None,
            **self.echo,
            **(self.extensions(result) if result is not None else {}),
        )

    def body(self, result: StrategyResult) -> dict[str, Any]:
        choice = result.choices[0]
        status = _status(choice.finish_reason)
        output: list[OutputItem] = []
        if choice.reasoning:
            content = [ReasoningText(text=choice.reasoning)]
            output.append(ReasoningItem(id=_item_id("rs"), content=content, status="completed"))
        if choice.content or not choice.tool_calls:
            text = [OutputText(text=choice.content)]
            output.append(OutputMessage(id=_item_id("msg"), status=status, content=text))
        output.extend(
            FunctionCallItem(
                id=_item_id("fc"),
                call_id=call.id,
                name=call.name,
                arguments=call.arguments,
                status=status,
            )
            for call in choice.tool_calls
        )
        self.final = _dump_response(self.response(status, output, result))
        return self.final

    def snapshot(self, status: ResponseStatus, spent: Usage | None = None) -> dict[str, Any]:
        """The response as it stands, in `status` (a background response queued, or cancelled
        with what it had spent), with the output items it finished."""
        shown = _dump_response(self.response(status, list(self._done)))
        if spent is not None:
            shown["usage"] = ResponseUsage(
                input_tokens=spent.prompt_tokens,
                output_tokens=spent.completion_tokens,
                total_tokens=spent.prompt_tokens + spent.completion_tokens,
                output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
                verifier_tokens=spent.verifier_tokens,
            ).model_dump()
        return shown

    def sse_opening(self, n: int) -> list[str]:
        opened = self.response("in_progress", [])
        return [
            self._event(ResponseLifecycleEvent, type=kind, response=opened)
            for kind in ("response.created", "response.in_progress")
        ]

    def sse_delta(self, delta: ChoiceDelta) -> list[str]:
        events: list[str] = []
        texts: tuple[tuple[Literal["reasoning", "message"], str], ...] = (
            ("reasoning", delta.reasoning),
            ("message", delta.content),
        )
        for kind, text in texts:
            if not text:
                continue
            item = self._opened(kind, events)
            item.text.append(text)
            fields = {"item_id": item.id, "output_index": item.output_index, "content_index": 0}
            if kind == "reasoning":
                events.append(self._event(ResponseReasoningTextDeltaEvent, delta=text, **fields))
            else:
                events.append(self._event(ResponseTextDeltaEvent, delta=text, **fields))
        for piece in delta.tool_calls:
            self._call_piece(piece, events)
        return events

    def sse_finish(self, index: int, reason: FinishReason) -> list[str]:
        events: list[str] = []
        if not self._has_answer:
            # An empty answer is still a message, as in the non-streamed body.
            self._opened("message", events)
        self._close(events, _status(reason))
        return events

    def sse_closing(self, result: StrategyResult, include_usage: bool) -> list[str]:
        # Usage always: the Responses API has no `stream_options.include_usage`.
        status = _status(result.choices[0].finish_reason)
        final = self.response(status, list(self._done), result)
        self.final = _dump_response(final)
        return [self._event(ResponseLifecycleEvent, type="response.completed", response=final)]

    def sse_error(self, error: ErrorResponse) -> list[str]:
        info = error.error
        failed = self.response(
            "failed", list(self._done), error={"code": info.code, "message": info.message}
        )
        self.final = _dump_response(failed)
        return [
            self._event(ResponseErrorEvent, code=info.code, message=info.message, param=info.param),
            self._event(ResponseLifecycleEvent, type="response.failed", response=failed),
        ]

    def sse_end(self) -> list[str]:
        return []

    def _call_piece(self, piece: ToolCallDelta, events: list[str]) -> None:
        """A piece of a call. The first piece of each call (a new `index`; OpenAI's shape
        gives it the id and name) opens a `function_call` item, and every piece's arguments are
        a delta of it. Backends send a call's pieces together, one call after another."""
        current = self._open
        if current is None or current.kind != "function_call" or current.call_index != piece.index:
            self._close(events, "completed")
            self._has_answer = True
            current = _OpenItem(
                "function_call",
                _item_id("fc"),
                len(self._done),
                call_id=piece.id or new_call_id(),
                name=piece.name or "",
                call_index=piece.index,
            )
            self._open = current
            added = FunctionCallItem(
                id=current.id,
                call_id=current.call_id,
                name=current.name,
                arguments="",
                status="in_progress",
            )
            self._item_event("added", current, added, events)
        elif piece.name and not current.name:
            current.name = piece.name
        if piece.arguments:
            current.text.append(piece.arguments)
            events.append(
                self._event(
                    ResponseFunctionCallArgumentsDeltaEvent,
                    item_id=current.id,
                    output_index=current.output_index,
                    delta=piece.arguments,
                )
            )

    def _opened(self, kind: Literal["reasoning", "message"], events: list[str]) -> _OpenItem:
        """The open item of `kind`, opening it (and closing another kind) if need be."""
        if self._open is not None and self._open.kind == kind:
            return self._open
        self._close(events, "completed")
        item = _OpenItem(kind, _item_id("rs" if kind == "reasoning" else "msg"), len(self._done))
        self._open = item
        added: OutputItem
        part: OutputText | ReasoningText
        if kind == "reasoning":
            added, part = ReasoningItem(id=item.id, status="in_progress"), ReasoningText(text="")
        else:
            self._has_answer = True
            added = OutputMessage(id=item.id, status="in_progress", content=[])
            part = OutputText(text="")
        self._item_event("added", item, added, events)
        events.append(
            self._event(
                ResponseContentPartEvent,
                type="response.content_part.added",
                item_id=item.id,
                output_index=item.output_index,
                content_index=0,
                part=part,
            )
        )
        return item

    def _close(self, events: list[str], status: Literal["completed", "incomplete"]) -> None:
        """Close the open item, if any: its text is done, then its part, then the item."""
        item, self._open = self._open, None
        if item is None:
            return
        text = "".join(item.text)
        if item.kind == "function_call":
            self._close_call(item, text, events, status)
            return
        fields = {"item_id": item.id, "output_index": item.output_index, "content_index": 0}
        done: OutputItem
        if item.kind == "reasoning":
            part: OutputText | ReasoningText = ReasoningText(text=text)
            events.append(self._event(ResponseReasoningTextDoneEvent, text=text, **fields))
            done = ReasoningItem(id=item.id, content=[ReasoningText(text=text)], status="completed")
        else:
            part = OutputText(text=text)
            events.append(self._event(ResponseTextDoneEvent, text=text, **fields))
            done = OutputMessage(id=item.id, status=status, content=[OutputText(text=text)])
        events.append(
            self._event(
                ResponseContentPartEvent, type="response.content_part.done", part=part, **fields
            )
        )
        self._item_done(item, done, events)

    def _close_call(
        self,
        item: _OpenItem,
        arguments: str,
        events: list[str],
        status: Literal["completed", "incomplete"],
    ) -> None:
        """A call's arguments are done, then its item."""
        events.append(
            self._event(
                ResponseFunctionCallArgumentsDoneEvent,
                item_id=item.id,
                output_index=item.output_index,
                name=item.name,
                arguments=arguments,
            )
        )
        done = FunctionCallItem(
            id=item.id, call_id=item.call_id, name=item.name, arguments=arguments, status=status
        )
        self._item_done(item, done, events)

    def _item_done(self, item: _OpenItem, done: OutputItem, events: list[str]) -> None:
        """The item is done: announced whole, and kept for the final response."""
        self._item_event("done", item, done, events)
        self._done.append(done)

    def _item_event(
        self,
        what: Literal["added", "done"],
        item: _OpenItem,
        shown: OutputItem,
        events: list[str],
    ) -> None:
        """`response.output_item.added` or `.done`, showing the item as it stands."""
        events.append(
            self._event(
                ResponseOutputItemEvent,
                type=f"response.output_item.{what}",
                output_index=item.output_index,
                item=shown,
            )
        )

    def _event(self, model: type[BaseModel], **fields: Any) -> str:
        """One named, numbered event."""
        event = model(sequence_number=self._sequence, **fields)
        self._sequence += 1
        data = event.model_dump()
        if isinstance(event, ResponseLifecycleEvent):
            data["response"] = _dump_response(event.response)
        return sse(data, event=data["type"])


def _dump_response(response: ResponsesResponse) -> dict[str, Any]:
    """The `response` object as JSON; our extensions only when set."""
    unset = {name for name in _EXTENSIONS if getattr(response, name) is None}
    return response.model_dump(exclude=unset)
