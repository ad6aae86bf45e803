"""What one request spent: its token usage, and how its calls went, for the response and metrics.

The strategy context adds to both on every call, so no strategy can forget to count one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from backends.base import Generation
from backends.errors import BackendTimeout
from verifiers.base import CandidateScore

__all__ = ["CallStats", "Clock", "ModelPrice", "Outcome", "Usage", "outcome_of"]

Outcome = Literal["ok", "timeout", "cancelled", "error"]
Clock = Callable[[], float]


@dataclass
class Usage:
    """Token counts of one request, as the model servers reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    verifier_tokens: int = 0
    calls: int = 0
    # The most that calls cut off before they reported their usage may have generated (their
    # `n` x `max_tokens`): keys are charged it, the response's usage leaves it out.
    unreported_tokens: int = 0
    # Of `completion_tokens`: the candidates' thinking, and the probes that asked whether it
    # had settled (`strategies.thinking`); the rest is answers (and what no split told apart).
    thinking_tokens: int = 0
    probe_tokens: int = 0

    def add_generation(self, generation: Generation) -> None:
        """Count one generation call."""
        self.add_call(generation.prompt_tokens, generation.completion_tokens)

    def add_call(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Count one generation call by its token counts."""
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.calls += 1

    def charge(self, price: ModelPrice | None) -> tuple[int, float]:
        """What a key is charged: tokens generated and verified, unreported ones included, and
        dollars at `price` (0 without one)."""
        tokens = self.completion_tokens + self.verifier_tokens + self.unreported_tokens
        if price is None:
            return tokens, 0.0
        return tokens, self.cost(price) + price.cost(0, self.unreported_tokens, 0)

    def cost(self, price: ModelPrice) -> float:
        """Dollars spent so far at `price`."""
        return price.cost(self.prompt_tokens, self.completion_tokens, self.verifier_tokens)


class ModelPrice(BaseModel):
    """What a model's tokens cost, in US dollars per million tokens (the server's `--prices`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: float = Field(default=0.0, ge=0, description="Per million prompt tokens.")
    completion: float = Field(default=0.0, ge=0, description="Per million generated tokens.")
    verifier: float = Field(
        default=0.0, ge=0, description="Per million tokens read or written by verifiers."
    )

    def cost(self, prompt_tokens: int, completion_tokens: int, verifier_tokens: int) -> float:
        """Dollars for these token counts."""
        total = (
            prompt_tokens * self.prompt
            + completion_tokens * self.completion
            + verifier_tokens * self.verifier
        )
        return total / 1_000_000


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

    def __init__(self, clock: Clock) -> None:
        self.seconds = 0.0
        self._clock = clock
        self._running = 0
        self._since = 0.0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        if self._running == 0:
            self._since = self._clock()
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            if self._running == 0:
                self.seconds += self._clock() - self._since


@dataclass
class CallStats:
    """How one request's calls went, for the server's metrics: time per phase and outcomes.

    A phase's time is wall-clock time with at least one call of it running, so the calls a
    search makes at once count once. `queue` is what backends that queue (the embedded model)
    report as waiting, summed over calls and at most the generate phase's time; vLLM's own
    queue shows in vLLM's metrics instead. `scores` holds each verifier call's scores, by the
    verifier's name, as the verifier returned them (not copied).
    """

    clock: Clock = time.perf_counter
    candidates: int = 0
    backend_calls: dict[Outcome, int] = field(default_factory=dict)
    verifier_calls: dict[tuple[str, Outcome], int] = field(default_factory=dict)
    scores: list[tuple[str, Sequence[CandidateScore]]] = field(default_factory=list)
    _queued: float = 0.0
    _generating: _WallClock = field(init=False)
    _verifying: _WallClock = field(init=False)

    def __post_init__(self) -> None:
        self._generating = _WallClock(self.clock)
        self._verifying = _WallClock(self.clock)

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

    def scored(self, name: str, scores: Sequence[CandidateScore]) -> None:
        """Keep a verifier call's scores, for the metrics to read once the request is over."""
        self.scores.append((name, scores))

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
