"""Tool calling for models served in process: the tools written into the prompt, and the calls
read back out of the text the model wrote.

The format is Hermes-style, as NousResearch's Hermes models and Qwen's templates use it (and
vLLM's `hermes` tool parser reads it), since SmolLM2's chat template has no tools section:

- the system message lists the functions as JSON inside `<tools></tools>` and asks for each
  call as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`;
- an assistant turn that made calls is rendered with those blocks after its text, and a
  `tool` turn's content inside `<tool_response></tool_response>`.

A forced `tool_choice` is enforced by a JSON schema on the output (`forced_schema`), so the
model writes bare JSON there: for `required`, an array of `{"name", "arguments"}` objects
(at most one without `parallel_tool_calls`); for a named function, that function's arguments.
vLLM forces calls the same way (its `get_json_schema_from_tools`).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backends.prompts import (
    ChatMessage,
    ChatPrompt,
    ForcedTool,
    StructuredOutput,
    Tool,
    ToolCall,
    Tools,
)
from backends.results import FinishReason, ToolCallDelta

__all__ = [
    "CALL_CLOSE",
    "CALL_OPEN",
    "HeldText",
    "ParsedCalls",
    "call_deltas",
    "forced_schema",
    "new_call_id",
    "parse_calls",
    "render_call",
    "with_tools_in_prompt",
]

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
_CALL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|\Z)", re.DOTALL)


def new_call_id() -> str:
    """A fresh id for a tool call, in OpenAI's `call_` form."""
    return f"call_{uuid.uuid4().hex[:24]}"


def render_call(name: str, arguments: str) -> str:
    """One call as the model is asked to write it (arguments that are not JSON kept as text)."""
    try:
        args: Any = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        args = arguments
    body = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
    return f"{CALL_OPEN}\n{body}\n{CALL_CLOSE}"


def _tools_instruction(tools: Tools) -> str:
    listed = "\n".join(
        json.dumps(
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.parameters or {"type": "object", "properties": {}},
                },
            },
            ensure_ascii=False,
        )
        for t in tools.functions
    )
    text = (
        "You can call functions to answer. Their signatures are inside <tools></tools>:\n"
        f"<tools>\n{listed}\n</tools>\n"
    )
    if tools.choice == "required":
        many = "one or more calls" if tools.parallel else "exactly one call"
        return text + (
            f"You must call functions now: answer with only a JSON array of {many}, each "
            'as {"name": <function name>, "arguments": <arguments object>}.'
        )
    if isinstance(tools.choice, ForcedTool):
        return text + (
            f"You must call {tools.choice.name} now: answer with only its arguments, as one "
            "JSON object."
        )
    return text + (
        "To call a function, write one block per call, with nothing after the blocks:\n"
        f'{CALL_OPEN}\n{{"name": <function name>, "arguments": <arguments object>}}\n'
        f"{CALL_CLOSE}\nIf no function helps, answer in plain text."
    )


def with_tools_in_prompt(prompt: ChatPrompt) -> tuple[ChatMessage, ...]:
    """The conversation as the model reads it: the tools in the system message (unless the
    choice is `none`), earlier calls and their results as Hermes blocks."""
    messages = [_flattened(m) for m in prompt.messages]
    tools = prompt.tools
    if tools is None or tools.choice == "none":
        return tuple(messages)
    instruction = _tools_instruction(tools)
    if messages and messages[0].role == "system":
        messages[0] = ChatMessage("system", f"{messages[0].content}\n\n{instruction}")
    else:
        messages.insert(0, ChatMessage("system", instruction))
    return tuple(messages)


def _flattened(message: ChatMessage) -> ChatMessage:
    if message.tool_calls:
        calls = "\n".join(render_call(c.name, c.arguments) for c in message.tool_calls)
        text = f"{message.content}\n{calls}" if message.content else calls
        return ChatMessage(message.role, text, reasoning=message.reasoning)
    if message.role == "tool":
        return ChatMessage("tool", f"<tool_response>\n{message.content}\n</tool_response>")
    return message


def forced_schema(tools: Tools) -> StructuredOutput | None:
    """The JSON schema a forced `tool_choice` constrains the output to; None when not forced."""
    if isinstance(tools.choice, ForcedTool):
        return StructuredOutput(_parameters(_named(tools, tools.choice.name)))
    if tools.choice != "required":
        return None
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "items": {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "enum": [t.name]},
                        "arguments": _parameters(t),
                    },
                    "required": ["name", "arguments"],
                }
                for t in tools.functions
            ]
        },
    }
    if not tools.parallel:
        schema["maxItems"] = 1
    return StructuredOutput(schema)


def _parameters(tool: Tool) -> dict[str, Any]:
    return tool.parameters or {"type": "object", "properties": {}}


def _named(tools: Tools, name: str) -> Tool:
    for tool in tools.functions:
        if tool.name == name:
            return tool
    raise ValueError(f"tool_choice names {name!r}, which is not among the tools")


@dataclass(frozen=True)
class ParsedCalls:
    """A completion read for calls: the text besides them, the calls, and the finish reason
    (OpenAI's: `tool_calls`, but `stop` for a named function)."""

    text: str
    calls: tuple[ToolCall, ...]
    finish_reason: FinishReason


def parse_calls(text: str, tools: Tools, finish_reason: FinishReason) -> ParsedCalls:
    """The calls in a completion: bare JSON when the choice was forced, else Hermes blocks.
    Text that holds no valid call (a cut-off one, an unknown function) stays text."""
    unchanged = ParsedCalls(text, (), finish_reason)
    if tools.choice == "none" or finish_reason == "length":
        return unchanged
    names = {t.name for t in tools.functions}
    calls: list[tuple[str, Any]] | None = None
    if tools.is_forced:
        calls = _forced_calls(text, tools)
    rest = text
    if calls is None:
        blocks = _CALL_BLOCK.findall(text)
        if not blocks:
            return unchanged
        calls = []
        for block in blocks:
            call = _call_object(_json_prefix(block))
            if call is None:
                return unchanged
            calls.append(call)
        rest = text[: text.index(CALL_OPEN)].strip()
    else:
        rest = ""
    if not calls or any(name not in names for name, _ in calls):
        return unchanged
    if not tools.parallel:
        calls = calls[:1]
    made = tuple(
        ToolCall(new_call_id(), name, json.dumps(args, ensure_ascii=False)) for name, args in calls
    )
    return ParsedCalls(rest, made, "stop" if isinstance(tools.choice, ForcedTool) else "tool_calls")


def _forced_calls(text: str, tools: Tools) -> list[tuple[str, Any]] | None:
    value = _json_prefix(text)
    if isinstance(tools.choice, ForcedTool):
        return [(tools.choice.name, value)] if isinstance(value, dict) else None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return None
    calls = [_call_object(item) for item in value]
    return None if any(c is None for c in calls) else [c for c in calls if c is not None]


def _call_object(value: Any) -> tuple[str, Any] | None:
    """`{"name": ..., "arguments": {...}}` (or `parameters`, as some models write) as a call."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    return (value["name"], args) if isinstance(args, dict) else None


def _json_prefix(text: str) -> Any:
    """The JSON value `text` starts with (trailing text ignored), or None."""
    try:
        value, _ = json.JSONDecoder().raw_decode(text.strip())
    except json.JSONDecodeError:
        return None
    return value


def call_deltas(calls: Sequence[ToolCall]) -> tuple[ToolCallDelta, ...]:
    """Whole calls as stream pieces: one piece per call, with its id, name and arguments."""
    return tuple(ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(calls))


class HeldText:
    """Streams text until a tool call may begin, then holds the rest, so a client never sees a
    `<tool_call>` block as content; a forced choice (bare JSON) holds everything."""

    def __init__(self, tools: Tools) -> None:
        self._hold_all = tools.is_forced
        self._held = ""
        self._in_call = False

    def feed(self, text: str) -> str:
        """The part of `text` that can go to the client now."""
        if self._hold_all or self._in_call:
            self._held += text
            return ""
        pending = self._held + text
        if CALL_OPEN in pending:
            at = pending.index(CALL_OPEN)
            self._in_call = True
            self._held = pending[at:]
            return pending[:at]
        keep = _partial_open(pending)
        self._held = pending[len(pending) - keep :] if keep else ""
        return pending[: len(pending) - keep]

    @property
    def held(self) -> str:
        """Text held back so far."""
        return self._held


def _partial_open(text: str) -> int:
    """Length of the longest end of `text` that is a proper start of `<tool_call>`."""
    return max((k for k in range(1, len(CALL_OPEN)) if text.endswith(CALL_OPEN[:k])), default=0)
