"""The strategy contract: what a strategy receives, what it may touch, what it returns.

A strategy (`strategies.strategy.Strategy`) is an object with a `name`, a pydantic
`params_model` and an async `run`. It sees the parsed request (`StrategyRequest`), its own
validated params (a `StrategyParams`) and a `StrategyContext` (`strategies.context`); it never
sees HTTP, settings or metrics. This module imports neither of those two, which build on it.

Errors (below `backends.errors.GatewayError`)::

    StrategyError               a strategy could not be chosen, configured or run
    ├── UnknownStrategyError    `reasoning_strategy` names no registered strategy
    └── InvalidParamsError      `reasoning_params` does not validate against the strategy's model
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from backends.base import (
    ChatPrompt,
    FinishReason,
    Prompt,
    SamplingParams,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
)
from backends.errors import GatewayError
from strategies.accounting import ModelPrice, Usage
from strategies.limits import CEILINGS, LimitExceeded, Limits
from strategies.stops import StopKind
from strategies.thinking_params import Thinking

__all__ = [
    "Budget",
    "Choice",
    "ChoiceDelta",
    "EventSink",
    "InvalidParamsError",
    "MaxSpend",
    "estimated_tokens",
    "prompt_chars",
    "NoParams",
    "ParamsContext",
    "Progress",
    "REASONING_EFFORTS",
    "ReasoningEffort",
    "StrategyError",
    "StrategyParams",
    "StrategyRequest",
    "StrategyResult",
    "TracedParams",
    "UnknownStrategyError",
]

# OpenAI's levels, with vLLM's extremes (`none` turns thinking off; `max` is DeepSeek's).
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
REASONING_EFFORTS: tuple[ReasoningEffort, ...] = get_args(ReasoningEffort)


class StrategyError(GatewayError):
    """A strategy could not be chosen, configured or run."""


class UnknownStrategyError(StrategyError):
    """`reasoning_strategy` names no registered strategy."""

    param = "reasoning_strategy"

    def __init__(self, name: str, valid: list[str]) -> None:
        super().__init__(
            f"Unknown reasoning_strategy {name!r}; valid strategies are: {', '.join(valid)}"
        )
        self.name = name
        self.valid = valid


class InvalidParamsError(StrategyError):
    """`reasoning_params` does not validate against the strategy's params model."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ParamsContext:
    """What params validators may check against: the configured verifiers (`prms`: those that
    are process reward models) and the limits.

    Passed as pydantic's validation context, so a bad param is a 400 before anything runs.
    """

    verifiers: frozenset[str] = frozenset()
    prms: frozenset[str] = frozenset()
    limits: Limits = field(default_factory=Limits)
    price: ModelPrice | None = None
    # Verifiers that score a candidate by its own token log-probabilities.
    logprob_verifiers: frozenset[str] = frozenset()

    @classmethod
    def of(cls, context: Any) -> ParamsContext:
        """The context a validator was given, or the defaults when it was given none."""
        return context if isinstance(context, ParamsContext) else cls()

    def require_verifier(self, name: str) -> None:
        """Raise `ValueError` (a 400 naming the field) unless `name` is configured."""
        if name not in self.verifiers:
            names = ", ".join(sorted(self.verifiers)) or "none"
            raise ValueError(f"unknown verifier {name!r}; configured: {names}")


# The `Limits` field that is the ceiling of each budget unit the server bounds.
_BUDGET_CEILINGS = {"tokens": "search_max_tokens", "seconds": "search_max_seconds"}


class Budget(BaseModel):
    """`reasoning_params.budget`: what a request may spend on its answer, in any of three units.

    `tokens` counts generated and verifier tokens; `seconds` the strategy's wall time; `usd`
    dollars at the server's `--prices` for the model (prompt tokens included). The server's
    search ceilings (`--limits.search-max-tokens`, `--limits.search-max-seconds`) bound it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: int | None = Field(default=None, ge=1, description="Generated plus verifier tokens.")
    seconds: float | None = Field(default=None, gt=0, description="Wall time of the strategy.")
    # Bounded so that every figure derived from it (tokens it affords, nano-dollars reserved)
    # stays finite.
    usd: float | None = Field(
        default=None, gt=0, le=1e6, description="Dollars at the server's prices."
    )

    @field_validator("tokens", "seconds")
    @classmethod
    def _within_ceiling(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.field_name is not None:
            limits = ParamsContext.of(info.context).limits
            ceiling: float = getattr(limits, _BUDGET_CEILINGS[info.field_name])
            if value > ceiling:
                raise LimitExceeded(f"budget.{info.field_name}", value, ceiling)
        return value

    @field_validator("usd")
    @classmethod
    def _priced(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and ParamsContext.of(info.context).price is None:
            raise ValueError(
                "a usd budget needs the model's price, and this server has none for it "
                "(--prices); give tokens or seconds instead"
            )
        return value


# Characters per token assumed where no count is known (a prompt's share of a reservation,
# what a verifier call will read): few, so that estimates err high, as a reservation must.
CHARS_PER_TOKEN = 3


def estimated_tokens(chars: int) -> int:
    """The tokens `chars` characters are assumed to be, erring high."""
    return chars // CHARS_PER_TOKEN + 1


def prompt_chars(prompt: Prompt) -> int:
    """The characters of a prompt's text, every message's together."""
    if isinstance(prompt, ChatPrompt):
        return sum(len(m.content) for m in prompt.messages)
    return len(prompt.text)


@dataclass(frozen=True)
class MaxSpend:
    """The most a request may spend, as its strategy's params declare it: what a key reserves
    and is checked against before anything runs.

    `samples` is the most candidates (or beams, particles, traces) drawn, and `samples_param`
    the request field that sets it, for an error naming it; `budget_tokens` is the largest token
    budget the request itself names; `usd` a dollar budget, which bounds the dollars by itself.
    `reads` is the most tokens its verifiers may read (None: it calls none): the run refuses a
    verifier call that would read past it, so that what was reserved bounds what is charged.
    """

    samples: int
    samples_param: str
    generated_tokens: int
    verifier_tokens: int
    budget_tokens: int | None = None
    usd: float | None = None
    reads: int | None = None

    @property
    def tokens(self) -> int:
        """Generated and verifier tokens together."""
        return self.generated_tokens + self.verifier_tokens


class StrategyParams(BaseModel):
    """Base of every strategy's params: unknown fields are errors, every field the server
    limits (`strategies.limits.CEILINGS`) is checked against its ceiling, and every strategy
    takes a `budget`.

    What the server needs of a strategy is declared here, so that it reads no strategy's own
    fields: `max_spend` (for keys), `is_trace_asked` and `is_progress_asked`. A strategy whose
    params differ overrides them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    budget: Budget | None = Field(
        default=None, description="Tokens, seconds or dollars the answer may cost at most."
    )
    thinking: Thinking | None = Field(
        default=None,
        description="How each candidate may think: a token budget, a minimum, early exit by "
        "probing (strategies that sample candidates, and none).",
    )

    def check_request(self, request: StrategyRequest) -> None:
        """Raise `InvalidParamsError` (a 400, before any call) when the request asks for what
        the strategy cannot honour; by default it can honour anything."""

    @property
    def is_trace_asked(self) -> bool:
        """Whether the response carries the run's `reasoning_trace`."""
        return False

    @property
    def is_progress_asked(self) -> bool:
        """Whether a stream carries progress lines while the strategy runs."""
        return False

    def max_spend(self, request: StrategyRequest, limits: Limits) -> MaxSpend:
        """The most a run may spend on `request`; by default one generation per choice (and
        what its thinking's probes may write)."""
        per_choice = request.sampling.max_tokens + self.probe_tokens(request)
        return self.spend_of(request, samples=1, generated=request.sampling.n * per_choice)

    def thinking_of(self, request: StrategyRequest) -> Thinking | None:
        """How each candidate may think: the params' `thinking`, its budget defaulting to the
        request's `thinking_token_budget`; None when neither controls it."""
        thinking = self.thinking
        if request.thinking_budget is None:
            return thinking
        if thinking is None:
            return Thinking(max_tokens=request.thinking_budget)
        if thinking.max_tokens is None:
            return thinking.model_copy(update={"max_tokens": request.thinking_budget})
        return thinking

    def probe_tokens(self, request: StrategyRequest) -> int:
        """The most tokens one candidate's thinking probes may write."""
        thinking = self.thinking_of(request)
        return thinking.probe_tokens(request.sampling.max_tokens) if thinking else 0

    def spend_of(
        self,
        request: StrategyRequest,
        *,
        samples: int,
        generated: int,
        reads: int | None = None,
        samples_param: str = "reasoning_params.n",
        asked_tokens: int | None = None,
    ) -> MaxSpend:
        """A `MaxSpend` of `samples` drawn and `generated` tokens, of which verifiers read at
        most `reads` tokens (None: no verifier); a `budget.tokens` bounds the whole.
        `asked_tokens` is a token cap of the strategy's own that the request gave."""
        budget = self.budget
        verifier = reads or 0
        if budget is not None and budget.tokens is not None:
            generated, verifier = budget.tokens, 0
        asked = [t for t in (budget.tokens if budget else None, asked_tokens) if t is not None]
        return MaxSpend(
            samples=max(request.sampling.n, samples),
            samples_param=samples_param if samples > request.sampling.n else "n",
            generated_tokens=generated,
            verifier_tokens=verifier,
            budget_tokens=max(asked) if asked else None,
            usd=budget.usd if budget is not None else None,
            reads=reads,
        )

    @field_validator(*CEILINGS, check_fields=False)
    @classmethod
    def _within_limits(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.field_name is not None:
            ParamsContext.of(info.context).limits.check(info.field_name, value)
        return value


class TracedParams(StrategyParams):
    """Params of a strategy that shows its run when asked: the whole of it in the response's
    trace (`return_trace`), and progress lines while a stream runs (`stream_progress`)."""

    return_trace: bool = False
    stream_progress: bool = Field(
        default=False,
        description="Streamed: a reasoning line after each wave of candidates or search step.",
    )

    @property
    def is_trace_asked(self) -> bool:
        return self.return_trace

    @property
    def is_progress_asked(self) -> bool:
        return self.stream_progress


class NoParams(StrategyParams):
    """Params of a strategy that takes none but the `budget` every strategy takes: any other
    field given is an error."""


@dataclass(frozen=True)
class StrategyRequest:
    """The client's request as a strategy sees it: a prompt and how to sample."""

    prompt: Prompt
    sampling: SamplingParams
    reasoning_effort: ReasoningEffort | None = None
    # vLLM's `thinking_token_budget`: each candidate's thinking cap, unless the params set one.
    thinking_budget: int | None = None


@dataclass(frozen=True)
class ChoiceDelta:
    """New text (or pieces of tool calls) of one choice, sent to a streaming client as it is
    produced."""

    index: int
    content: str = ""
    reasoning: str = ""
    logprobs: tuple[TokenLogprob, ...] | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass(frozen=True)
class Progress(ChoiceDelta):
    """A line on how the run is going (`StrategyContext.progress`), not part of the answer."""


EventSink = Callable[[ChoiceDelta], Awaitable[None]]


@dataclass(frozen=True)
class Choice:
    """One returned answer; `content_tokens` is how many generated tokens `content` (and the
    `tool_calls`, when the answer is calls) holds."""

    content: str
    finish_reason: FinishReason
    content_tokens: int
    reasoning: str | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class StrategyResult:
    """What a run returns; `trace` is shown to the client only when it asks.

    `fallback` says why another strategy answered (a verifier failed); `stopped_early` why it
    answered before spending all it was asked to (a settled vote, a budget, a search's limits);
    `tokens_saved` estimates what the candidates it did not draw would have cost.

    What the run spent its compute on, for the server's metrics (strategies that neither vote
    nor search leave them unset): `agreement` is the share of the candidates drawn whose answer
    is in the chosen answer's group (None: no answer was voted on); `drawn` the candidates (a
    search's sampled steps) drawn of the `allowed` the request's params allowed (0: no such
    bound); `stop` why the run stopped, from a closed set.
    """

    choices: tuple[Choice, ...]
    usage: Usage
    stopped_early: str | None = None
    trace: Mapping[str, Any] | None = None
    fallback: str | None = None
    tokens_saved: int = 0
    agreement: float | None = None
    drawn: int = 0
    allowed: int = 0
    stop: StopKind | None = None

    @property
    def reasoning_tokens(self) -> int:
        """Generated tokens that are not in any returned `content`."""
        return max(0, self.usage.completion_tokens - sum(c.content_tokens for c in self.choices))
