"""The items of a `/v1/responses` request's `input` (messages, the reasoning of an earlier
answer, the function calls it made and their outputs), and the chat turns they stand for."""

from __future__ import annotations

from backends.base import ChatMessage, ToolCall
from server.protocol.common import OpenAIBaseModel, text_of
from server.protocol.errors import InvalidRequest

__all__ = [
    "ContentPart",
    "InputItem",
    "call_of",
    "call_output_of",
    "item_refusal",
    "message_of",
    "reasoning_text_of",
    "text_in",
]

# Text parts of a message item; OpenAI's own assistant turns use `output_text`.
_TEXT_PARTS = ("input_text", "output_text")


class ContentPart(OpenAIBaseModel):
    """A part of an input item's content: text, or a kind this text-only server refuses."""

    type: str
    text: str | None = None


class InputItem(OpenAIBaseModel):
    """One item of `input`: a message (the default type), the reasoning of an earlier answer,
    a `function_call` it made (`call_id`, `name`, `arguments`) or a `function_call_output`
    (`call_id`, `output`) answering one.

    Other item types (hosted tools' calls, item references) are a 400 naming the item.
    """

    type: str = "message"
    role: str | None = None
    content: str | list[ContentPart] | None = None
    status: str | None = None
    summary: list[ContentPart] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[ContentPart] | None = None


def message_of(item: InputItem, param: str, reasoning: str | None) -> ChatMessage:
    if item.role not in ("user", "assistant", "system", "developer"):
        raise InvalidRequest(
            f"{param}.role must be user, assistant, system or developer", f"{param}.role"
        )
    if item.content is None:
        raise InvalidRequest(f"{param} needs content", f"{param}.content")
    text = text_in(item.content, _TEXT_PARTS, f"{param}.content")
    # Chat templates know `system`; OpenAI's newer `developer` role means the same.
    role = "system" if item.role == "developer" else item.role
    return ChatMessage(role, text, reasoning=reasoning)


def call_of(item: InputItem, param: str) -> ToolCall:
    """A `function_call` input item as the call an assistant turn made."""
    for field, value in (("call_id", item.call_id), ("name", item.name)):
        if not value:
            raise InvalidRequest(f"{param} (a function_call) needs {field}", f"{param}.{field}")
    assert item.call_id is not None and item.name is not None
    return ToolCall(item.call_id, item.name, item.arguments or "")


def call_output_of(item: InputItem, param: str) -> ChatMessage:
    """A `function_call_output` input item as the `tool` turn answering its call."""
    if not item.call_id:
        raise InvalidRequest(
            f"{param} (a function_call_output) needs the call_id of the call it answers",
            f"{param}.call_id",
        )
    if item.output is None:
        raise InvalidRequest(f"{param} (a function_call_output) needs output", f"{param}.output")
    text = text_in(item.output, ("input_text",), f"{param}.output")
    return ChatMessage("tool", text, tool_call_id=item.call_id)


def reasoning_text_of(item: InputItem, param: str) -> str:
    """The text of a reasoning item: its `reasoning_text` content, else its summary."""
    if isinstance(item.content, str):
        raise InvalidRequest(f"{param}.content of a reasoning item is a list", f"{param}.content")
    where = f"{param}.content" if item.content else f"{param}.summary"
    return text_in(item.content or item.summary or [], ("reasoning_text", "summary_text"), where)


def text_in(content: str | list[ContentPart], kinds: tuple[str, ...], where: str) -> str:
    """Content given as a string, or as parts of `kinds` (another kind is a 400 naming `where`)."""
    if isinstance(content, str):
        return content
    return text_of([(part.type, part.text) for part in content], kinds, where)


def item_refusal(kind: str) -> str:
    return (
        f"input items of type {kind!r} are not supported; send message, reasoning, "
        "function_call and function_call_output items"
    )
