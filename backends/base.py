"""The backend protocol: what the layers above may ask of a model server, and what comes back.

A `Backend` is shared by every request; each request opens a `BackendSession` on it, whose
calls the server can tag with the request's id and keep on one replica. Every result carries the
token counts the model server reported, so usage is counted where tokens are produced and never
estimated. The value types that cross the protocol are defined in `backends.prompts` (what
is asked) and `backends.results` (what comes back) and re-exported here; errors are in
`backends.errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from pydantic import BaseModel

# Re-exported: the layers above name this one module for the whole contract.
from backends.prompts import (
    ChatMessage,
    ChatPrompt,
    ForcedTool,
    Prompt,
    SamplingParams,
    StructuredOutput,
    TextPrompt,
    TokenPrompt,
    Tool,
    ToolCall,
    ToolChoice,
    Tools,
)
from backends.results import (
    Completion,
    Echo,
    FinishReason,
    Generation,
    PromptLogprobs,
    PromptToken,
    RewardOutputs,
    StreamDelta,
    StreamEnd,
    StreamEvent,
    Tokenized,
    TokenLogprob,
    ToolCallDelta,
)

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


class RewardModel(Protocol):
    """A reward model server: pooled outputs or class probabilities for a batch of texts."""

    async def pool(self, texts: Sequence[str]) -> RewardOutputs:
        """Per-step (or per-token) output vectors of each text, in one call."""
        ...

    async def classify(self, texts: Sequence[str]) -> RewardOutputs:
        """One class-probability row per text, in one call."""
        ...
