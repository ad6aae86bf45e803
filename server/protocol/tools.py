"""Function calling on the wire: the tools a request offers, its `tool_choice`, the calls in
a conversation's history, and the calls in a response and its stream chunks (OpenAI's shapes,
which vLLM takes and returns the same way)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from backends.base import ForcedTool, Tool, ToolCall, ToolCallDelta, ToolChoice, Tools
from server.protocol.common import OpenAIBaseModel
from server.protocol.errors import InvalidRequest

__all__ = [
    "ChatCompletionToolParam",
    "DeltaFunctionCall",
    "DeltaToolCall",
    "FunctionCall",
    "FunctionDefinition",
    "NamedFunction",
    "NamedToolChoice",
    "ToolCallOut",
    "ToolCallParam",
    "ToolChoiceParam",
    "tools_of",
]


class FunctionDefinition(OpenAIBaseModel):
    """A function the model may call; `parameters` is the JSON schema of its arguments."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatCompletionToolParam(OpenAIBaseModel):
    """One entry of `tools`."""

    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(OpenAIBaseModel):
    """The function a named `tool_choice` forces."""

    name: str


class NamedToolChoice(OpenAIBaseModel):
    """`tool_choice` naming one function: `{"type": "function", "function": {"name": ...}}`."""

    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoiceParam = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(OpenAIBaseModel):
    """A call's function: its name and its arguments as JSON text."""

    name: str
    arguments: str


class ToolCallParam(OpenAIBaseModel):
    """A call an earlier assistant turn made, as a client sends it back in the history."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    def to_call(self) -> ToolCall:
        """The call as the backends see it."""
        return ToolCall(self.id, self.function.name, self.function.arguments)


class ToolCallOut(BaseModel):
    """A call in a response's message."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    @classmethod
    def of(cls, call: ToolCall) -> ToolCallOut:
        """The wire shape of a backend's call."""
        return cls(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments))


class DeltaFunctionCall(BaseModel):
    """A piece of a streamed call's function: its name once, then pieces of its arguments."""

    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    """A piece of a streamed call; the first piece of each call carries its id and type."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall

    @classmethod
    def of(cls, piece: ToolCallDelta) -> DeltaToolCall:
        """The wire shape of a backend's piece of a call."""
        return cls(
            index=piece.index,
            id=piece.id,
            type="function" if piece.id is not None else None,
            function=DeltaFunctionCall(name=piece.name, arguments=piece.arguments),
        )


def tools_of(
    tools: list[ChatCompletionToolParam] | None,
    tool_choice: ToolChoiceParam | None,
    parallel_tool_calls: bool | None,
) -> Tools | None:
    """The request's tools for the backends, checked as OpenAI and vLLM check them: a 400
    naming the field for no tools, a choice without tools, or a named function not offered."""
    if tools is None:
        if tool_choice not in (None, "none"):
            raise InvalidRequest(
                "tool_choice needs tools: give the functions in tools", "tool_choice"
            )
        return None
    if not tools:
        raise InvalidRequest("tools must not be empty; leave the field out instead", "tools")
    functions = tuple(
        Tool(t.function.name, t.function.description, t.function.parameters, t.function.strict)
        for t in tools
    )
    names = [f.name for f in functions]
    if len(set(names)) != len(names):
        raise InvalidRequest("tools must have different function names", "tools")
    choice: ToolChoice
    if isinstance(tool_choice, NamedToolChoice):
        if tool_choice.function.name not in names:
            raise InvalidRequest(
                f"tool_choice names {tool_choice.function.name!r}, which is not among the tools "
                f"({', '.join(names)})",
                "tool_choice",
            )
        choice = ForcedTool(tool_choice.function.name)
    else:
        choice = tool_choice or "auto"
    return Tools(functions, choice, parallel=parallel_tool_calls is not False)
