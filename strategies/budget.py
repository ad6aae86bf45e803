"""Spending a request's budget: what is left of it, and when a strategy must stop.

Every strategy spends against one `Allowance`: the request's `reasoning_params.budget`
(generated plus verifier tokens, wall time, dollars at the model's price), narrowed by a
search's own caps (`max_search_tokens`, `max_search_seconds` or the server's defaults). A
strategy asks `spent()` between waves of candidates and between search steps, and sizes what it
draws next by `tokens_left()`, so a budget is overshot by at most one wave's or one step's
tokens. `guard()` stops a search's calls in flight at the deadline, except during its first
step: a search always has a partial answer to give.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from backends.base import SamplingParams
from backends.errors import GatewayError
from strategies.accounting import ModelPrice, Usage
from strategies.base import Budget, StrategyRequest
from verifiers.base import VerifierError

__all__ = ["Allowance", "BudgetSpent", "OutOfTime", "ReadRefused", "capped_by_budget"]


class BudgetSpent(Exception):
    """The deadline passed during a guarded step; carries the reason to report."""


class ReadRefused(BudgetSpent, VerifierError):
    """A verifier call was not made: what it would read is more than the run has left. A
    search stops there, as at its budget; a vote answers without the verifier, and says so."""


class OutOfTime(GatewayError):
    """A strategy that answers in one call ran out of its time budget: it has no partial
    answer to give."""

    param = "reasoning_params.budget.seconds"


@dataclass
class Allowance:
    """One run's limits, counted from the usage it had when the allowance began.

    `tokens` bounds generated plus verifier tokens, `generated` generated tokens only (the
    searches' own cap), `usd` dollars at `price`; `deadline` is on the running loop's clock and
    `seconds` the time budget it came from.
    """

    usage: Usage
    price: ModelPrice | None = None
    tokens: int | None = None
    generated: int | None = None
    usd: float | None = None
    seconds: float | None = None
    deadline: float | None = None
    _start: tuple[int, int, float] = field(default=(0, 0, 0.0), init=False)
    _steps: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        dollars = self.usage.cost(self.price) if self.price is not None else 0.0
        self._start = (self.usage.completion_tokens, self.usage.verifier_tokens, dollars)

    @classmethod
    def of(cls, budget: Budget | None, usage: Usage, price: ModelPrice | None) -> Allowance:
        """The allowance of `budget` (unlimited without one), starting now."""
        if budget is None:
            return cls(usage, price)
        deadline = None
        if budget.seconds is not None:
            deadline = asyncio.get_running_loop().time() + budget.seconds
        return cls(usage, price, budget.tokens, None, budget.usd, budget.seconds, deadline)

    @property
    def limited(self) -> bool:
        """Whether anything bounds the spend."""
        return any(v is not None for v in (self.tokens, self.generated, self.usd, self.deadline))

    def narrowed(
        self, *, generated: int | None, seconds: float | None, before: float | None = None
    ) -> Allowance:
        """This allowance, counted from now, with a cap on generated tokens, a time budget
        from now, and a deadline no later than `before`, where given."""
        deadline, budget_seconds = self.deadline, self.seconds
        if seconds is not None:
            own = asyncio.get_running_loop().time() + seconds
            if deadline is None or own < deadline:
                deadline, budget_seconds = own, seconds
        if before is not None:
            deadline = before if deadline is None else min(deadline, before)
        caps = (self.tokens, self.usd)
        left = self._left_tokens(), self._left_usd()
        tokens = None if caps[0] is None else left[0]
        usd = None if caps[1] is None else left[1]
        return Allowance(self.usage, self.price, tokens, generated, usd, budget_seconds, deadline)

    def spent(self) -> str | None:
        """Why the strategy must stop now, or None while budget remains."""
        generated, verifier, _ = self._used()
        if self.generated is not None and generated >= self.generated:
            return f"token budget reached ({generated} of {self.generated} generated tokens)"
        if self.tokens is not None and generated + verifier >= self.tokens:
            return (
                f"token budget reached ({generated + verifier} of {self.tokens} "
                "generated and verifier tokens)"
            )
        usd = self._left_usd()
        if usd is not None and usd <= 0:
            return f"usd budget reached (${self._used()[2]:.6f} of ${self.usd:g})"
        if self.expired():
            return self.time_reason()
        return None

    def expired(self) -> bool:
        """Whether the time budget is over."""
        return self.deadline is not None and asyncio.get_running_loop().time() >= self.deadline

    def time_reason(self) -> str:
        if self.seconds is None:
            return "time budget reached (the request's deadline)"
        return f"time budget reached ({self.seconds:g} s)"

    def tokens_left(self) -> int | None:
        """Tokens that may still be spent (dollars turned into tokens at the dearer of the
        generated and verifier prices), or None when no unit bounds them."""
        left = [v for v in (self._left_tokens(), self._left_generated()) if v is not None]
        usd = self._left_usd()
        if usd is not None and self.price is not None:
            per_token = max(self.price.completion, self.price.verifier) / 1_000_000
            if per_token > 0:
                left.append(math.floor(usd / per_token))
        return max(0, min(left)) if left else None

    def reading_left(self) -> int | None:
        """Tokens a verifier may still read (dollars turned into tokens at the verifier's
        price), or None when neither tokens nor dollars bound them."""
        left = [v for v in (self._left_tokens(),) if v is not None]
        usd = self._left_usd()
        if usd is not None and self.price is not None and self.price.verifier > 0:
            left.append(math.floor(usd / (self.price.verifier / 1_000_000)))
        return max(0, min(left)) if left else None

    def capped(self, sampling: SamplingParams) -> SamplingParams:
        """`sampling` with each of its `n` completions' `max_tokens` cut to its share of the
        tokens left (at least one), for strategies that answer with one call."""
        left = self.tokens_left()
        if left is None:
            return sampling
        share = max(1, left // sampling.n)
        if share >= sampling.max_tokens:
            return sampling
        return dataclasses.replace(sampling, max_tokens=share)

    def _used(self) -> tuple[int, int, float]:
        generated, verifier, dollars = self._start
        spent = self.usage.cost(self.price) - dollars if self.price is not None else 0.0
        return (
            self.usage.completion_tokens - generated,
            self.usage.verifier_tokens - verifier,
            spent,
        )

    def _left_tokens(self) -> int | None:
        if self.tokens is None:
            return None
        generated, verifier, _ = self._used()
        return self.tokens - generated - verifier

    def _left_generated(self) -> int | None:
        return None if self.generated is None else self.generated - self._used()[0]

    def _left_usd(self) -> float | None:
        return None if self.usd is None else self.usd - self._used()[2]

    @contextlib.asynccontextmanager
    async def timed(self, strategy: str) -> AsyncIterator[None]:
        """Run a one-call strategy's call within the time budget; `OutOfTime` past it."""
        out_of_time = OutOfTime(
            f"{self.time_reason()} before {strategy}'s one call finished; it answers in one "
            "call and has no partial answer (a token budget cuts max_tokens instead)"
        )
        async with _until(self.deadline, out_of_time):
            yield

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run one step's calls, stopped at the deadline with `BudgetSpent` (except the first
        step's, so there is an answer to give). Whether a step may start at all is `spent()`'s."""
        first, self._steps = self._steps == 0, self._steps + 1
        async with _until(None if first else self.deadline, BudgetSpent(self.time_reason())):
            yield


@contextlib.asynccontextmanager
async def _until(deadline: float | None, error: Exception) -> AsyncIterator[None]:
    """Run the block until `deadline` (on the loop's clock; None: no limit), then raise `error`;
    a call inside that timed out on its own keeps its own `TimeoutError`."""
    if deadline is None:
        yield
        return
    limit = asyncio.timeout_at(deadline)
    try:
        async with limit:
            yield
    except TimeoutError as exc:
        if limit.expired():
            raise error from exc
        raise


def capped_by_budget(request: StrategyRequest, sampling: SamplingParams) -> str | None:
    """What a one-call strategy reports when its budget cut the request's `max_tokens`."""
    if sampling.max_tokens >= request.sampling.max_tokens:
        return None
    return (
        f"token budget: max_tokens cut from {request.sampling.max_tokens} to "
        f"{sampling.max_tokens} per completion"
    )
