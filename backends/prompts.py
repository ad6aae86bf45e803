"""What a backend is asked: prompts (chat, text, token ids), the tools they offer, and how to
sample (`SamplingParams`, `StructuredOutput`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ChatMessage",
    "ChatPrompt",
    "ForcedTool",
    "Prompt",
    "SamplingParams",
    "StructuredOutput",
    "TextPrompt",
    "TokenPrompt",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "Tools",
]


@dataclass(frozen=True)
class ToolCall:
    """A function call the model made: the call's id, the function's name and its arguments
    as the JSON text the model wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatMessage:
    """One chat turn; content is plain text (multi-part content is flattened at the edge).

    An assistant turn may carry the `reasoning` it showed, for chat templates that render
    interleaved thinking (vLLM's name for it), and the `tool_calls` it made; a `tool` turn
    answers the call `tool_call_id` names.
    """

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    reasoning: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The turn as chat templates and vLLM take it: `reasoning`, `tool_calls` (in OpenAI's
        shape) and `tool_call_id` only when there are some."""
        turn: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.reasoning:
            turn["reasoning"] = self.reasoning
        if self.tool_calls:
            turn["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            turn["tool_call_id"] = self.tool_call_id
        return turn


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, what it does, and the JSON schema of its
    arguments (None: it takes none)."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


@dataclass(frozen=True)
class ForcedTool:
    """`tool_choice` naming the one function the model must call."""

    name: str


ToolChoice = Literal["none", "auto", "required"] | ForcedTool


@dataclass(frozen=True)
class Tools:
    """The functions a conversation offers, whether (or which) one must be called, and
    whether several calls may come in one turn."""

    functions: tuple[Tool, ...]
    choice: ToolChoice = "auto"
    parallel: bool = True

    @property
    def is_forced(self) -> bool:
        """Whether the answer must be a call (`required`, or a named function)."""
        return self.choice == "required" or isinstance(self.choice, ForcedTool)


@dataclass(frozen=True)
class ChatPrompt:
    """A conversation to answer, or, with `continue_final_message`, an assistant turn to extend;
    `tools` are the functions the model may call in its answer; `template_kwargs` the arguments
    the chat template is rendered with (a client's `chat_template_kwargs`, with what its
    `reasoning_effort` sets, as vLLM merges them)."""

    messages: tuple[ChatMessage, ...]
    continue_final_message: bool = False
    tools: Tools | None = None
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TextPrompt:
    """Raw text handed to the model as is (the completions API)."""

    text: str


@dataclass(frozen=True)
class TokenPrompt:
    """A prompt given as token ids, handed to the model as they are (the completions API)."""

    ids: tuple[int, ...]


# What strategies send; token ids reach a backend only as `echo`'s prompt.
Prompt = ChatPrompt | TextPrompt


@dataclass(frozen=True)
class StructuredOutput:
    """Output the model must produce, enforced while it decodes (never by retrying): any JSON
    object, or, with `json_schema`, JSON valid for that schema."""

    json_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class SamplingParams:
    """How to sample; `logprobs=None` asks for none, `0` for the chosen token's only;
    `structured` constrains the output's form.

    The logits transforms take vLLM's meanings and neutral values: `top_k` 0 keeps every
    token; `repetition_penalty` divides the logits of tokens in the prompt or the output;
    `frequency_penalty` and `presence_penalty` count the output only; `logit_bias` adds to
    token ids' logits; a token of `stop_token_ids` ends a sequence (its text left out).
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    include_stop: bool = False
    seed: int | None = None
    logprobs: int | None = None
    structured: StructuredOutput | None = None
    top_k: int = 0
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    # vLLM fields a client sent that every call forwards as they are
    # (`server.protocol.vllm_fields.FORWARDED`).
    forwarded: Mapping[str, Any] = field(default_factory=dict)
