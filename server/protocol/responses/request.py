"""The `POST /v1/responses` request, and its translation into a chat prompt for the strategies.

`store: true` keeps the response, `background: true` runs it past its connection, and
`previous_response_id` continues a kept one (`server.serving.background`); `conversation`,
hosted tools and logprobs are a 400. `text.format` asks for JSON (`json_object`, or
`json_schema` with its `name` and `schema` flat in it, as the Responses API has them). `input`
items (messages, reasoning, function calls and their outputs) become the chat turns they stand
for, after the turns of the response it continues.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator

from backends.base import ChatMessage, ChatPrompt, Tools
from server.protocol.common import (
    EFFORT_MAX_TOKENS,
    GenerationRequest,
    OpenAIBaseModel,
    ResponseFormat,
    effort_kwargs,
)
from server.protocol.errors import InvalidRequest
from server.protocol.responses.items import (
    InputItem,
    call_of,
    call_output_of,
    item_refusal,
    message_of,
    reasoning_text_of,
)
from server.protocol.tools import (
    ChatCompletionToolParam,
    FunctionDefinition,
    NamedFunction,
    NamedToolChoice,
    tools_of,
)
from strategies.base import REASONING_EFFORTS, ReasoningEffort, StrategyRequest
from strategies.limits import Limits

__all__ = [
    "FunctionToolChoice",
    "FunctionToolParam",
    "ReasoningConfig",
    "ResponsesRequest",
    "TextConfig",
]

# An assistant turn cut short, which vLLM continues rather than answers.
_PARTIAL = ("in_progress", "incomplete")


class FunctionToolParam(OpenAIBaseModel):
    """One entry of `tools`: a function, flat as the Responses API has it (chat nests the same
    fields under `function`). Other tool types (hosted search, MCP, ...) are a 400 naming it."""

    type: str
    name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def to_chat(self, param: str) -> ChatCompletionToolParam:
        """The same function in chat's shape, which the tool checks and backends take."""
        if self.type != "function":
            raise InvalidRequest(
                f"{param} is a tool of type {self.type!r}; this server calls only function "
                "tools (type 'function', run by the client)",
                f"{param}.type",
            )
        if self.name is None:
            raise InvalidRequest(f"{param} needs the function's name", f"{param}.name")
        function = FunctionDefinition(
            name=self.name,
            description=self.description,
            parameters=self.parameters,
            strict=self.strict,
        )
        return ChatCompletionToolParam(function=function)


class FunctionToolChoice(OpenAIBaseModel):
    """`tool_choice` naming one function, flat: `{"type": "function", "name": ...}`."""

    type: Literal["function"]
    name: str


class ReasoningConfig(OpenAIBaseModel):
    """`reasoning`: its `effort` sets the budget a request leaves open, as `reasoning_effort`."""

    effort: str | None = None
    summary: str | None = None


class TextConfig(OpenAIBaseModel):
    """`text`: only plain text output (`format.type` "text") for now."""

    format: dict[str, Any] | None = None
    verbosity: str | None = None


class ResponsesRequest(GenerationRequest):
    """`POST /v1/responses`: OpenAI's fields, then the shared ones and ours (from
    `GenerationRequest`: `reasoning_strategy`, `reasoning_params`, `seed`, `stop`)."""

    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: ReasoningConfig | None = None
    store: bool | None = Field(
        default=None,
        description="Keep the response for GET /v1/responses/{id} and previous_response_id "
        "(kept only when true; a background response is always kept).",
    )
    text: TextConfig | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionToolChoice | None = None
    tools: list[FunctionToolParam] | None = None
    truncation: str | None = None
    include: list[str] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None

    # The turns of the response `previous_response_id` names, set once they are read.
    _history: tuple[ChatMessage, ...] = PrivateAttr(default=())

    def following(self, history: tuple[ChatMessage, ...]) -> ResponsesRequest:
        """This request, continuing the conversation whose turns are `history`."""
        self._history = history
        return self

    @property
    def is_kept(self) -> bool:
        """Whether the response is kept: asked for, or run in the background."""
        return bool(self.store or self.background)

    @field_validator("input")
    @classmethod
    def _input_not_empty(cls, value: str | list[InputItem]) -> str | list[InputItem]:
        if not value:
            raise ValueError("input must not be empty")
        return value

    def to_strategy_request(self, limits: Limits) -> StrategyRequest:
        """Refuse what this server cannot do, then convert for the strategies."""
        self._refuse_unsupported()
        effort = self._effort()
        max_tokens = self.max_output_tokens or (
            min(EFFORT_MAX_TOKENS[effort], limits.max_tokens)
            if effort is not None
            else limits.default_max_tokens
        )
        # `reasoning.effort` reaches the model as the chat endpoint's `reasoning_effort` does.
        prompt = dataclasses.replace(self._prompt(), template_kwargs=effort_kwargs(effort))
        sampling = self._sampling(max_tokens, limits, None)
        structured = self._text_format()
        if structured is not None:
            sampling = dataclasses.replace(sampling, structured=structured.structured())
        if effort is not None:
            forwarded = {**sampling.forwarded, "reasoning_effort": effort}
            sampling = dataclasses.replace(sampling, forwarded=forwarded)
        return StrategyRequest(prompt, sampling, effort, self.thinking_token_budget)

    def _refuse_unsupported(self) -> None:
        refusals: list[tuple[bool, str, str]] = [
            (
                self.conversation is not None,
                "conversation",
                "conversation is not supported: continue a kept response with "
                "previous_response_id, or send the whole conversation in input",
            ),
            (
                self.background is True and self.store is False,
                "store",
                "a background response is kept until it is read: leave store out (or true)",
            ),
            (
                self.prompt is not None,
                "prompt",
                "prompt (a stored template) is not supported; send its text in input",
            ),
            (
                self.n != 1,
                "n",
                "n must be 1: a response holds one answer; to draw several candidates, "
                "name a strategy that takes reasoning_params.n",
            ),
            (
                self.truncation not in (None, "disabled"),
                "truncation",
                "only truncation 'disabled' is supported (a prompt over the context is a 400)",
            ),
            (
                "message.output_text.logprobs" in (self.include or ()),
                "include",
                "logprobs are not supported on /v1/responses; use /v1/chat/completions",
            ),
        ]
        for refused, param, message in refusals:
            if refused:
                raise InvalidRequest(message, param)
        if self.response_format is not None and self.response_format.type != "text":
            raise InvalidRequest(
                "response_format is chat's field; /v1/responses takes text.format, text only",
                "response_format",
            )

    def _text_format(self) -> ResponseFormat | None:
        """`text.format` as chat's `response_format` (None: free text). The Responses API has
        a schema's `name`, `schema` and `strict` flat in `format`."""
        shown = dict((self.text.format or {}) if self.text is not None else {})
        kind = shown.pop("type", "text")
        try:
            if kind == "text":
                return None
            if kind == "json_object":
                return ResponseFormat(type="json_object")
            if kind == "json_schema":
                return ResponseFormat.model_validate({"type": kind, "json_schema": shown})
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"][1:]) or "schema"
            raise InvalidRequest(
                f"text.format: {where}: {problem['msg']}", f"text.format.{where}"
            ) from exc
        raise InvalidRequest(
            f"text.format type {kind!r} is not one of text, json_object, json_schema",
            "text.format.type",
        )

    def _effort(self) -> ReasoningEffort | None:
        effort = self.reasoning.effort if self.reasoning is not None else None
        if effort is None:
            return self.reasoning_effort
        for known in REASONING_EFFORTS:
            if effort == known:
                return known
        raise InvalidRequest(
            f"reasoning.effort {effort!r} is not supported; use one of "
            f"{', '.join(REASONING_EFFORTS)}",
            "reasoning.effort",
        )

    def _tools(self) -> Tools | None:
        if not self.tools:
            # vLLM's defaults are no tools and `auto`, and clients send `tools: []` for none.
            if isinstance(self.tool_choice, FunctionToolChoice) or self.tool_choice == "required":
                raise InvalidRequest(
                    "tool_choice needs tools: give the functions in tools", "tool_choice"
                )
            return None
        chat_tools = [tool.to_chat(f"tools.{i}") for i, tool in enumerate(self.tools)]
        choice = self.tool_choice
        if isinstance(choice, FunctionToolChoice):
            return tools_of(
                chat_tools,
                NamedToolChoice(function=NamedFunction(name=choice.name)),
                self.parallel_tool_calls,
            )
        return tools_of(chat_tools, choice, self.parallel_tool_calls)

    def _prompt(self) -> ChatPrompt:
        tools = self._tools()
        messages: list[ChatMessage] = []
        if self.instructions:
            messages.append(ChatMessage("system", self.instructions))
        # A continued conversation's turns, after this request's instructions (the previous
        # response's are not carried over, as OpenAI does).
        messages.extend(m for m in self._history if m.role != "system")
        if isinstance(self.input, str):
            messages.append(ChatMessage("user", self.input))
            return ChatPrompt(tuple(messages), tools=tools)
        reasoning: str | None = None  # of an answer whose message item comes next
        for index, item in enumerate(self.input):
            param = f"input.{index}"
            if item.type == "reasoning":
                reasoning = (reasoning or "") + reasoning_text_of(item, param)
                continue
            if item.type == "function_call":
                call = call_of(item, param)
                previous = messages[-1] if messages else None
                if reasoning is None and previous is not None and previous.role == "assistant":
                    # The calls of one turn are items of their own; chat has them in one message.
                    calls = (*previous.tool_calls, call)
                    messages[-1] = dataclasses.replace(previous, tool_calls=calls)
                else:
                    messages.append(
                        ChatMessage("assistant", "", tool_calls=(call,), reasoning=reasoning)
                    )
                reasoning = None
                continue
            if item.type == "function_call_output":
                message = call_output_of(item, param)
            elif item.type == "message":
                message = message_of(item, param, reasoning if item.role == "assistant" else None)
            else:
                raise InvalidRequest(item_refusal(item.type), param)
            if reasoning is not None and message.role != "assistant":
                # Reasoning with no answer after it is a turn of its own.
                messages.append(ChatMessage("assistant", "", reasoning=reasoning))
            reasoning = None
            messages.append(message)
        if reasoning is not None:
            messages.append(ChatMessage("assistant", "", reasoning=reasoning))
        last = self.input[-1]
        partial = last.type == "message" and last.role == "assistant" and last.status in _PARTIAL
        return ChatPrompt(tuple(messages), continue_final_message=partial, tools=tools)

    def echo(self) -> dict[str, Any]:
        """The request's fields a `response` object repeats."""
        return {
            "instructions": self.instructions,
            "metadata": self.metadata,
            "parallel_tool_calls": self.parallel_tool_calls,
            "reasoning": self.reasoning.model_dump() if self.reasoning is not None else None,
            "temperature": self.temperature,
            "tool_choice": (
                self.tool_choice.model_dump()
                if isinstance(self.tool_choice, FunctionToolChoice)
                else self.tool_choice or "auto"
            ),
            "tools": [tool.model_dump(exclude_none=True) for tool in self.tools or ()],
            "top_p": self.top_p,
            "user": self.user,
        }
