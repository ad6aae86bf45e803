"""The backend protocol: what the layers above may ask of a model server, and what comes back.

A `Backend` is shared by every request; each request opens a `BackendSession` on it, whose
calls the server can tag with the request's id and keep on one replica. Every result carries the
token counts the model server reported, so usage is counted where tokens are produced and never
estimated. Errors are in `backends.errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel

__all__ = [
    "Backend",
    "BackendSession",
    "BackendSettings",
    "ChatMessage",
    "ChatPrompt",
    "Completion",
    "Echo",
    "FinishReason",
    "ForcedTool",
    "Generation",
    "Prompt",
    "PromptLogprobs",
    "PromptToken",
    "RewardModel",
    "RewardOutputs",
    "SamplingParams",
    "StreamDelta",
    "StreamEnd",
    "StreamEvent",
    "StructuredOutput",
    "TextPrompt",
    "TokenLogprob",
    "TokenPrompt",
    "Tokenized",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "Tools",
]

# "tool_calls": the model ended its turn by calling tools (OpenAI's and vLLM's name).
FinishReason = Literal["stop", "length", "tool_calls"]


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
    `tools` are the functions the model may call in its answer."""

    messages: tuple[ChatMessage, ...]
    continue_final_message: bool = False
    tools: Tools | None = None


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


@dataclass(frozen=True)
class TokenLogprob:
    """A generated (or scored) token with its log-probability and the top alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Completion:
    """One sampled continuation; `reasoning` is what a server-side reasoning parser split off,
    `tool_calls` the calls a tool parser found (`text` is then what the model wrote besides)."""

    text: str
    finish_reason: FinishReason
    tokens: int
    logprobs: tuple[TokenLogprob, ...] | None = None
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class Generation:
    """The `n` completions of one prompt, with the prompt's token count."""

    completions: tuple[Completion, ...]
    prompt_tokens: int
    # Time the call waited for the model server before it ran, where the server says.
    queue_seconds: float = 0.0

    @property
    def completion_tokens(self) -> int:
        """Tokens generated over all completions."""
        return sum(c.tokens for c in self.completions)


@dataclass(frozen=True)
class PromptLogprobs:
    """Log-probabilities of a continuation's tokens given a prompt."""

    logprobs: tuple[TokenLogprob, ...]
    prompt_tokens: int

    @property
    def total_logprob(self) -> float:
        """Sum of the continuation's token log-probabilities."""
        return sum(t.logprob for t in self.logprobs)


@dataclass(frozen=True)
class PromptToken:
    """One token of a prompt, scored: its log-probability given the tokens before it (none for
    the first), the top alternatives there, and where its text starts in the prompt's text."""

    token: str
    logprob: float | None
    top: tuple[tuple[str, float], ...]
    offset: int


@dataclass(frozen=True)
class Echo:
    """A raw prompt scored token by token, and what was generated after it (`max_tokens` 0
    generates nothing: every completion is empty)."""

    text: str
    tokens: tuple[PromptToken, ...]
    generation: Generation


@dataclass(frozen=True)
class Tokenized:
    """A prompt's token ids as the model server's tokenizer makes them."""

    ids: tuple[int, ...]
    max_model_len: int
    strings: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed tool call, in OpenAI's shape: the call's first piece has its
    `id` and `name`, every piece a part of its `arguments` text; `index` orders the calls of
    one completion."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class StreamDelta:
    """New text of completion `index`, with the log-probabilities of its tokens if asked.

    `reasoning` is text a vLLM reasoning parser split off the answer, kept apart likewise;
    `tool_calls` are pieces of the calls a tool parser found.

    `tokens` is how many generated tokens arrived with this delta (those of deltas not passed
    on included), and `prompt_tokens`, on a stream's first delta, the prompt's: a stream cut
    off before its `StreamEnd` is counted by them. 0 where the backend does not say.
    """

    index: int
    text: str
    logprobs: tuple[TokenLogprob, ...] | None = None
    reasoning: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    tokens: int = 0
    prompt_tokens: int = 0


@dataclass(frozen=True)
class StreamEnd:
    """The stream's last event: how each completion ended and the exact token counts."""

    finish_reasons: tuple[FinishReason, ...]
    prompt_tokens: int
    completion_tokens: tuple[int, ...] = field(default=())
    queue_seconds: float = 0.0


StreamEvent = StreamDelta | StreamEnd


class BackendSession(Protocol):
    """One request's view of a backend: what strategies and verifiers call while answering it."""

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        """Sample `params.n` completions of one prompt in one call."""
        ...

    def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamEvent]:
        """Sample as `generate` does, yielding text as it is produced; ends with `StreamEnd`."""
        ...

    async def prompt_logprobs(self, prompt: Prompt, continuation: str) -> PromptLogprobs:
        """Log-probabilities of `continuation`'s tokens following `prompt`, without sampling."""
        ...

    async def render(self, prompt: Prompt) -> str:
        """The exact text the model sees for `prompt` (chat template applied)."""
        ...

    async def count_tokens(self, text: str) -> int:
        """How many tokens `text` is, without special tokens."""
        ...

    async def echo(self, prompt: TextPrompt | TokenPrompt, params: SamplingParams) -> Echo:
        """Score the prompt's own tokens (`params.logprobs` alternatives each) and sample
        `params.n` completions after it; `params.max_tokens` may be 0."""
        ...

    async def tokenize(
        self, prompt: TextPrompt | ChatPrompt, add_special_tokens: bool, with_strings: bool
    ) -> Tokenized:
        """The prompt's token ids; a chat prompt is rendered with the model's template first."""
        ...

    async def detokenize(self, ids: Sequence[int]) -> str:
        """The text of these token ids."""
        ...

    async def tokenizer_info(self) -> dict[str, Any]:
        """The tokenizer's configuration, as vLLM's `GET /tokenizer_info` gives it."""
        ...


class BackendSettings(BaseModel):
    """A backend's part of the server's settings: its fields, all with defaults, join the
    server's flags and `TTC_*` variables whichever backend is chosen."""

    def check_chosen(self) -> None:
        """Raise `ValueError` if the backend cannot run with these settings; checked only when
        `--backend` chooses it."""


class Backend(Protocol):
    """A model server shared by every request: vLLM over HTTP, the embedded CPU model, a script."""

    async def model_name(self) -> str:
        """The model name clients address (a vLLM backend may ask the server for it)."""
        ...

    def session(
        self, request_id: str | None = None, deadline: float | None = None
    ) -> BackendSession:
        """A session for one request: its calls go to one replica, tagged with its id; none is
        retried past `deadline` (on the event loop's clock)."""
        ...

    async def check_ready(self) -> None:
        """Raise `BackendError` unless the model is loaded and answering."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and memory."""
        ...


@dataclass(frozen=True)
class RewardOutputs:
    """A reward model's outputs: per input, its rows (one per step tag, token or class vector)."""

    rows: tuple[tuple[tuple[float, ...], ...], ...]
    prompt_tokens: int


class RewardModel(Protocol):
    """A reward model server: pooled outputs or class probabilities for a batch of texts."""

    async def pool(self, texts: Sequence[str]) -> RewardOutputs:
        """Per-step (or per-token) output vectors of each text, in one call."""
        ...

    async def classify(self, texts: Sequence[str]) -> RewardOutputs:
        """One class-probability row per text, in one call."""
        ...
