"""What comes back from a backend: completions and their log-probabilities, scored prompts,
token ids, stream events and reward-model outputs, each with the token counts the model server
reported."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from backends.prompts import ToolCall

__all__ = [
    "Completion",
    "Echo",
    "FinishReason",
    "Generation",
    "PromptLogprobs",
    "PromptToken",
    "RewardOutputs",
    "StreamDelta",
    "StreamEnd",
    "StreamEvent",
    "TokenLogprob",
    "Tokenized",
    "ToolCallDelta",
]

# "tool_calls": the model ended its turn by calling tools (OpenAI's and vLLM's name).
FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class TokenLogprob:
    """A generated (or scored) token with its log-probability and the top alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Completion:
    """One sampled continuation; `reasoning` is the thinking a reasoning parser (or the
    strategies, by the model's tags) split off, and `reasoning_tokens` how many of `tokens` it
    took (0: not known); `tool_calls` the calls a tool parser found (`text` is then what the
    model wrote besides)."""

    text: str
    finish_reason: FinishReason
    tokens: int
    logprobs: tuple[TokenLogprob, ...] | None = None
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning_tokens: int = 0

    @classmethod
    def empty(cls, has_logprobs: bool) -> Completion:
        """What `max_tokens` 0 samples: no text, no tokens, and no log-probabilities in a list
        when they were asked for."""
        return cls("", "length", 0, () if has_logprobs else None)


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

    @classmethod
    def of(cls, generation: Generation) -> StreamEnd:
        """The end of a stream whose completions and counts are `generation`'s."""
        return cls(
            finish_reasons=tuple(c.finish_reason for c in generation.completions),
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=tuple(c.tokens for c in generation.completions),
            queue_seconds=generation.queue_seconds,
        )


StreamEvent = StreamDelta | StreamEnd


@dataclass(frozen=True)
class RewardOutputs:
    """A reward model's outputs: per input, its rows (one per step tag, token or class vector)."""

    rows: tuple[tuple[tuple[float, ...], ...], ...]
    prompt_tokens: int
