"""The strategy contract: what a strategy receives, what it may touch, what it returns.

A strategy is an object with a `name`, a pydantic `params_model` and an async `run`. It sees
the parsed request, its own validated params and a `StrategyContext`; it never sees HTTP,
settings or metrics. Every model call goes through the context, which adds the token counts
the backend reported to the request's usage, so no strategy can forget to count a call.

Errors::

    StrategyError               a strategy could not be chosen, configured or run
    ├── UnknownStrategyError    `reasoning_strategy` names no registered strategy
    └── InvalidParamsError      `reasoning_params` does not validate against the strategy's model
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from server.backends.base import (
    Backend,
    BackendResponseError,
    BackendTimeout,
    Completion,
    FinishReason,
    Generation,
    Prompt,
    PromptScore,
    SamplingParams,
    StreamDelta,
    StreamEnd,
    TokenLogprob,
)
from verifiers.base import Candidate, CandidateScore, Verifier, VerifierError

__all__ = [
    "Budget",
    "CallStats",
    "Choice",
    "ChoiceDelta",
    "EventSink",
    "InvalidParamsError",
    "NoParams",
    "Outcome",
    "ParamsContext",
    "ReasoningEffort",
    "Strategy",
    "StrategyContext",
    "StrategyError",
    "StrategyRequest",
    "StrategyResult",
    "UnknownStrategyError",
    "Usage",
    "outcome_of",
]

ReasoningEffort = Literal["low", "medium", "high"]


class StrategyError(Exception):
    """A strategy could not be chosen, configured or run."""


class UnknownStrategyError(StrategyError):
    """`reasoning_strategy` names no registered strategy."""

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
    """What params validators may check against: the configured verifiers and the limits.

    Passed as pydantic's validation context, so a bad param is a 400 before anything runs.
    """

    verifiers: frozenset[str] = frozenset()
    max_n: int = 64
    max_tokens: int = 4096
    search_max_tokens: int = 65536
    search_max_seconds: float = 540.0

    @classmethod
    def of(cls, context: Any) -> ParamsContext:
        """The context a validator was given, or the defaults when it was given none."""
        return context if isinstance(context, ParamsContext) else cls()

    def require_verifier(self, name: str) -> None:
        """Raise `ValueError` (a 400 naming the field) unless `name` is configured."""
        if name not in self.verifiers:
            names = ", ".join(sorted(self.verifiers)) or "none"
            raise ValueError(f"unknown verifier {name!r}; configured: {names}")


class NoParams(BaseModel):
    """Params of a strategy that takes none: any field given is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class StrategyRequest:
    """The client's request as a strategy sees it: a prompt and how to sample."""

    prompt: Prompt
    sampling: SamplingParams
    reasoning_effort: ReasoningEffort | None = None


@dataclass(frozen=True)
class Budget:
    """Limits on one request's work: generated tokens over all calls, and a deadline.

    `search_tokens` and `search_seconds` are what a search may spend when its params don't say.
    """

    max_generated_tokens: int | None = None
    deadline: float | None = None
    max_candidates: int = 64
    search_tokens: int = 8192
    search_seconds: float = 120.0

    def seconds_left(self) -> float | None:
        """Time until the deadline on the running loop's clock, or None without one."""
        if self.deadline is None:
            return None
        return self.deadline - asyncio.get_running_loop().time()


@dataclass
class Usage:
    """Token counts of one request, as the model servers reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    verifier_tokens: int = 0
    calls: int = 0
    verifier_calls: int = 0

    def add_generation(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Count one generation call."""
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.calls += 1


Outcome = Literal["ok", "timeout", "cancelled", "error"]


def outcome_of(exc: BaseException | None) -> Outcome:
    """A closed set of call outcomes, for metric labels."""
    if exc is None:
        return "ok"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, TimeoutError | BackendTimeout):
        return "timeout"
    return "error"


class _WallClock:
    """Seconds during which at least one of possibly overlapping calls was running."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._running = 0
        self._since = 0.0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        if self._running == 0:
            self._since = time.perf_counter()
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            if self._running == 0:
                self.seconds += time.perf_counter() - self._since


@dataclass
class CallStats:
    """How one request's calls went, for the server's metrics: time per phase and outcomes.

    A phase's time is wall-clock time with at least one call of it running, so the calls a
    search makes at once count once. `queue` is what backends that queue (the embedded model)
    report as waiting, summed over calls and at most the generate phase's time; vLLM's own
    queue shows in vLLM's metrics instead.
    """

    candidates: int = 0
    backend_calls: dict[Outcome, int] = field(default_factory=dict)
    verifier_calls: dict[tuple[str, Outcome], int] = field(default_factory=dict)
    _queued: float = 0.0
    _generating: _WallClock = field(default_factory=_WallClock)
    _verifying: _WallClock = field(default_factory=_WallClock)

    @property
    def queue_seconds(self) -> float:
        return min(self._queued, self._generating.seconds)

    @property
    def generate_seconds(self) -> float:
        return self._generating.seconds - self.queue_seconds

    @property
    def verify_seconds(self) -> float:
        return self._verifying.seconds

    @contextlib.contextmanager
    def backend_call(self) -> Iterator[None]:
        """Time a generation call and count its outcome."""
        with self._generating.running(), _counting(self._backend_done):
            yield

    @contextlib.contextmanager
    def verifier_call(self, name: str) -> Iterator[None]:
        """Time a verifier call and count its outcome."""
        with self._verifying.running(), _counting(lambda o: self._verifier_done(name, o)):
            yield

    def _backend_done(self, outcome: Outcome) -> None:
        self.backend_calls[outcome] = self.backend_calls.get(outcome, 0) + 1

    def _verifier_done(self, name: str, outcome: Outcome) -> None:
        self.verifier_calls[name, outcome] = self.verifier_calls.get((name, outcome), 0) + 1

    def generated(self, generation: Generation) -> None:
        """Count a generation's candidates and the time it waited for the model."""
        self._queued += generation.queue_seconds
        self.candidates += len(generation.completions)


@contextlib.contextmanager
def _counting(record: Callable[[Outcome], None]) -> Iterator[None]:
    """Hand the block's outcome to `record`, however the block ends."""
    outcome: Outcome = "ok"
    try:
        yield
    except BaseException as error:
        outcome = outcome_of(error)
        raise
    finally:
        record(outcome)


@dataclass(frozen=True)
class ChoiceDelta:
    """New text of one choice, sent to a streaming client as it is produced."""

    index: int
    content: str = ""
    reasoning: str = ""
    logprobs: tuple[TokenLogprob, ...] | None = None


EventSink = Callable[[ChoiceDelta], Awaitable[None]]


@dataclass(frozen=True)
class Choice:
    """One returned answer; `content_tokens` is how many generated tokens `content` holds."""

    content: str
    finish_reason: FinishReason
    content_tokens: int
    reasoning: str | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class StrategyResult:
    """What a run returns; `trace` is shown to the client only when it asks."""

    choices: tuple[Choice, ...]
    usage: Usage
    stopped_early: str | None = None
    trace: Mapping[str, Any] | None = None
    fallback: str | None = None

    @property
    def reasoning_tokens(self) -> int:
        """Generated tokens that are not in any returned `content`."""
        return max(0, self.usage.completion_tokens - sum(c.content_tokens for c in self.choices))


@dataclass
class StrategyContext:
    """Everything a run may touch: the backend (through counting wrappers), verifiers, budget."""

    backend: Backend
    request_id: str
    verifiers: Mapping[str, Verifier] = field(default_factory=dict)
    budget: Budget = field(default_factory=Budget)
    sink: EventSink | None = None
    usage: Usage = field(default_factory=Usage)
    stats: CallStats = field(default_factory=CallStats)

    @property
    def is_streaming(self) -> bool:
        """Whether the client reads the answer as it is produced."""
        return self.sink is not None

    async def emit(self, delta: ChoiceDelta) -> None:
        """Send new text to a streaming client; a no-op otherwise."""
        if self.sink is not None:
            await self.sink(delta)

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        """Sample `params.n` completions and count their tokens."""
        with self.stats.backend_call():
            generation = await self.backend.generate(prompt, params)
        return self._counted(generation)

    async def generate_streamed(
        self,
        prompt: Prompt,
        params: SamplingParams,
        on_delta: Callable[[StreamDelta], Awaitable[None]],
    ) -> Generation:
        """Sample as `generate` does, handing each piece of text to `on_delta` as it arrives."""
        with self.stats.backend_call():
            generation = await self._streamed(prompt, params, on_delta)
        return self._counted(generation)

    def _counted(self, generation: Generation) -> Generation:
        self.stats.generated(generation)
        self.usage.add_generation(generation.prompt_tokens, generation.completion_tokens)
        return generation

    async def _streamed(
        self,
        prompt: Prompt,
        params: SamplingParams,
        on_delta: Callable[[StreamDelta], Awaitable[None]],
    ) -> Generation:
        texts = [""] * params.n
        reasonings = [""] * params.n
        logprobs: list[list[TokenLogprob]] = [[] for _ in range(params.n)]
        end: StreamEnd | None = None
        async for event in self.backend.stream(prompt, params):
            if isinstance(event, StreamEnd):
                end = event
                continue
            texts[event.index] += event.text
            reasonings[event.index] += event.reasoning
            logprobs[event.index].extend(event.logprobs or ())
            await on_delta(event)
        if end is None:
            raise BackendResponseError("the backend's stream ended without its final event")
        completions = tuple(
            Completion(
                text=texts[i],
                finish_reason=end.finish_reasons[i],
                tokens=end.completion_tokens[i],
                logprobs=tuple(logprobs[i]) if params.logprobs is not None else None,
                reasoning=reasonings[i] or None,
            )
            for i in range(params.n)
        )
        return Generation(completions, end.prompt_tokens, queue_seconds=end.queue_seconds)

    async def score(self, prompt: Prompt, continuation: str) -> PromptScore:
        """Log-probabilities of given text; its tokens count as verifier tokens."""
        with self.stats.verifier_call("backend_score"):
            scored = await self.backend.score(prompt, continuation)
        self.usage.verifier_tokens += scored.prompt_tokens
        self.usage.calls += 1
        return scored

    async def verify(
        self, name: str, question: str, candidates: Sequence[Candidate]
    ) -> tuple[CandidateScore, ...]:
        """Score candidates with the verifier configured as `name`; its tokens are counted."""
        with self.stats.verifier_call(name):
            scores = await self.verifiers[name].score(question, candidates)
        if len(scores.candidates) != len(candidates):
            raise VerifierError(
                f"verifier {name!r} returned {len(scores.candidates)} scores "
                f"for {len(candidates)} candidates"
            )
        self.usage.verifier_tokens += scores.tokens
        self.usage.verifier_calls += 1
        return scores.candidates

    async def render(self, prompt: Prompt) -> str:
        """The text the model sees for `prompt`."""
        return await self.backend.render(prompt)

    async def count_tokens(self, text: str) -> int:
        """How many tokens `text` is in the backend's tokenizer."""
        return await self.backend.count_tokens(text)


P_contra = TypeVar("P_contra", bound=BaseModel, contravariant=True)


class Strategy(Protocol, Generic[P_contra]):
    """A test-time compute algorithm, registered under `name`."""

    name: ClassVar[str]
    params_model: ClassVar[type[BaseModel]]

    async def run(
        self, request: StrategyRequest, params: P_contra, ctx: StrategyContext
    ) -> StrategyResult:
        """Answer `request`, calling the model only through `ctx`."""
        ...
