"""Per-key limits and budgets: checked once a request is valid, before any backend call.

A request that asks more than the server ever allows (`--limits.*`) is a 400 from
`Serving.prepare`; one within them but over its key's limits is a 429 from here
(`KeyLimitExceeded`). In that order:

1. the key's ceilings: the strategy allowed, the largest `n` (the request's and the strategy's
   own) and the largest token budget (`budget.tokens`, `max_search_tokens`, or without either
   the most the strategy may spend: `estimate`); retrying cannot
   help, so these 429s carry no `Retry-After` and `x-should-retry: false`;
2. the counters, in the `LimitStore`, in one atomic step: requests per minute, requests in
   flight, tokens per minute and dollars per day and month. The request reserves what it may
   spend at most (`estimate`), and `settle` replaces that by what it spent once it is over,
   however it ended: a request cut off is charged what it used.

If the store cannot be reached (Redis down), `--redis-on-error` decides: `closed` (the default)
answers 503; `open-rates` admits keys without a dollar budget, unmetered, and answers 503 to
keys with one; `open` admits everyone, unmetered. Each request admitted so is counted
(`ttc_limit_store_errors_total{outcome="admitted"}`) and logged at WARNING.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Literal

from server.errors import KeyLimitExceeded, LimitStoreUnavailable
from server.keys import ApiKey, KeyLimits
from server.limit_store import (
    NANO,
    LimitStore,
    LimitStoreError,
    Metered,
    Reservation,
    retry_after_s,
)
from server.metrics import Metrics
from server.serving.preparing import PreparedRequest
from strategies.accounting import ModelPrice, Usage
from strategies.base import estimated_tokens, prompt_chars
from strategies.limits import Limits

__all__ = ["Claim", "Estimate", "OnStoreError", "Quotas", "estimate"]

logger = logging.getLogger(__name__)

OnStoreError = Literal["closed", "open-rates", "open"]


@dataclass(frozen=True)
class Estimate:
    """What a request may spend at most: the numbers a reservation and the ceilings use."""

    strategy: str | None  # None: a request that runs no strategy (the tokenizer routes)
    n: int
    n_param: str  # the field `n` came from, for a 429 naming it
    budget_tokens: int | None
    tokens: int  # generated plus verifier
    prompt_tokens: int
    usd: float | None = None  # a `budget.usd`, which bounds the dollars by itself


@dataclass
class Claim:
    """An admitted request's hold on its key, settled once when the request is over."""

    key: ApiKey
    model: str
    reservation: Reservation | None
    settled: bool = False


def estimate(prepared: PreparedRequest, limits: Limits) -> Estimate:
    """The most `prepared` may spend, as its strategy declares it (`StrategyParams.max_spend`;
    documented in docs/keys.md, "Reservations"). Prompt tokens, for dollars, are counted once,
    estimated from the prompt's characters (`strategies.base.estimated_tokens`)."""
    spend = prepared.params.max_spend(prepared.request, limits)
    return Estimate(
        strategy=prepared.strategy.name,
        n=spend.samples,
        n_param=spend.samples_param,
        budget_tokens=spend.budget_tokens,
        tokens=spend.tokens,
        prompt_tokens=estimated_tokens(prompt_chars(prepared.request.prompt)),
        usd=spend.usd,
    )


class Quotas:
    """Admits and settles the requests of keys; built once per app."""

    def __init__(
        self,
        store: LimitStore,
        metrics: Metrics,
        prices: Mapping[str, ModelPrice],
        on_store_error: OnStoreError = "closed",
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.prices = dict(prices)
        self.on_store_error = on_store_error
        self._settling: set[asyncio.Task[None]] = set()

    async def admit(self, key: ApiKey, model: str, request_id: str, need: Estimate) -> Claim:
        """Check `key`'s ceilings and counters and reserve `need`; raise `KeyLimitExceeded`
        (429) or `LimitStoreUnavailable` (503) instead when the request may not run."""
        limits = key.limits
        self._check_ceilings(key, need)
        price = self.prices.get(model)
        nano = 0
        if price is not None and limits.has_budget:
            if need.usd is not None:
                nano = round(need.usd * NANO)
            else:
                dearer = max(price.completion, price.verifier)
                dollars = (need.prompt_tokens * price.prompt + need.tokens * dearer) / 1e6
                nano = round(dollars * NANO)
        metered = _metered(limits, priced=price is not None)
        self._check_reservation_fits(key, metered, need.tokens, nano)
        reservation: Reservation | None = None
        if metered != Metered():
            reservation = await self._reserve(key, request_id, metered, need.tokens, nano)
        self.metrics.key_admitted(key.alias)
        return Claim(key, model, reservation)

    def settle(self, claim: Claim, usage: Usage | None) -> asyncio.Task[None] | None:
        """Charge what the request spent (None: what it reserved) and free its place. It runs
        as a task of its own, so that a cancelled request is still settled; the caller may
        await it (None: nothing to wait for)."""
        if claim.settled:
            return None
        claim.settled = True
        price = self.prices.get(claim.model)
        reservation = claim.reservation
        if usage is None:
            tokens, nano = (reservation.tokens, reservation.nano) if reservation else (0, 0)
            dollars = nano / NANO
        else:
            tokens, dollars = usage.charge(price)
            nano = round(dollars * NANO)
        self.metrics.key_spent(claim.key.alias, tokens, dollars if price is not None else None)
        if reservation is None:
            return None
        task = asyncio.get_running_loop().create_task(self._settle(reservation, tokens, nano))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        return task

    def settle_after(self, claim: Claim, usage: Usage, over: Awaitable[None]) -> None:
        """Settle `claim` at `usage` once `over` is done (a cancelled run has unwound), in a
        task of its own."""

        async def later() -> None:
            await over
            settling = self.settle(claim, usage)
            if settling is not None:
                await settling

        task = asyncio.get_running_loop().create_task(later())
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def aclose(self) -> None:
        """Finish the settlements under way, then close the store."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        await self.store.aclose()

    async def _settle(self, reservation: Reservation, tokens: int, nano: int) -> None:
        try:
            await self.store.settle(reservation, tokens, nano)
        except LimitStoreError as exc:
            # Its reservation stands and its place in flight expires on its own.
            self.metrics.limit_store_error("settle_failed")
            logger.warning("could not settle a request of key %s: %s", reservation.alias, exc)

    async def _reserve(
        self, key: ApiKey, request_id: str, metered: Metered, tokens: int, nano: int
    ) -> Reservation | None:
        try:
            verdict = await self.store.admit(key.alias, request_id, metered, tokens, nano)
        except LimitStoreError as exc:
            if self.on_store_error == "open" or (
                self.on_store_error == "open-rates" and not key.limits.has_budget
            ):
                self.metrics.limit_store_error("admitted")
                logger.warning("limit store unreachable, admitting unmetered: %s", exc)
                return None
            self.metrics.limit_store_error("refused")
            self.metrics.key_rejected_for(key.alias, "store_unavailable")
            logger.error("limit store unreachable, refusing the request: %s", exc)
            raise LimitStoreUnavailable(
                "The server cannot check this key's limits now; retry the request later."
            ) from exc
        if isinstance(verdict, Reservation):
            return verdict
        wait = retry_after_s(verdict, await self.store.now())
        raise self._refused(key, verdict, _REFUSALS[verdict], wait, kind=_KINDS.get(verdict))

    def _check_ceilings(self, key: ApiKey, need: Estimate) -> None:
        limits = key.limits
        if (
            limits.strategies is not None
            and need.strategy is not None
            and need.strategy not in limits.strategies
        ):
            allowed = ", ".join(sorted(limits.strategies)) or "none"
            message = f"This key may not use {need.strategy!r}; it may use: {allowed}."
            raise self._refused(key, "strategy", message, param="reasoning_strategy")
        if limits.max_n is not None and need.n > limits.max_n:
            message = f"{need.n_param} is {need.n}; this key allows at most {limits.max_n}."
            if need.n_param == "reasoning_params.n":
                message += " (Without reasoning_params.n, reasoning_effort sets it.)"
            raise self._refused(key, "n", message, param=need.n_param)
        ceiling = limits.max_search_tokens
        # Whether or not the request names a budget: without one, what its strategy may spend.
        budget = need.budget_tokens if need.budget_tokens is not None else need.tokens
        if ceiling is not None and budget > ceiling:
            message = f"The token budget is {budget}; this key allows at most {ceiling}."
            if need.budget_tokens is None:
                message = (
                    f"This request may spend {budget} tokens; this key allows at most {ceiling}. "
                    "Give reasoning_params.budget.tokens (or lower max_tokens or n)."
                )
            raise self._refused(
                key, "search_tokens", message, param="reasoning_params.budget", kind="tokens"
            )

    def _check_reservation_fits(
        self, key: ApiKey, metered: Metered, tokens: int, nano: int
    ) -> None:
        # A reservation bigger than a whole window would wait forever: say so now.
        if metered.tpm is not None and tokens > metered.tpm:
            message = (
                f"This request may spend {tokens} tokens, more than this key's {metered.tpm} "
                "tokens per minute; lower max_tokens or n, or give reasoning_params.budget."
            )
            raise self._refused(key, "tpm", message, param="max_tokens", kind="tokens")
        for limit, period in ((metered.nano_per_day, "day"), (metered.nano_per_month, "month")):
            if limit is not None and nano > limit:
                message = (
                    f"This request may cost ${nano / NANO:.6f}, more than this key's budget of "
                    f"${limit / NANO:g} per {period}."
                )
                raise self._refused(key, f"usd_per_{period}", message, code="insufficient_quota")

    def _refused(
        self,
        key: ApiKey,
        reason: str,
        message: str,
        retry_after_s: int | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str | None = None,
    ) -> KeyLimitExceeded:
        self.metrics.key_rejected_for(key.alias, reason)
        logger.info("key %s over its limit: %s", key.alias, reason)
        if code is None:
            code = "insufficient_quota" if reason.startswith("usd") else "rate_limit_exceeded"
        # OpenAI's error types: what ran out (requests or tokens), or the quota.
        kind = "insufficient_quota" if code == "insufficient_quota" else (kind or "requests")
        return KeyLimitExceeded(message, kind, code, retry_after_s, param)


_KINDS = {"tpm": "tokens"}
_REFUSALS = {
    "rpm": "This key's requests per minute are used up; retry after the minute.",
    "tpm": "This key's tokens per minute are used up; retry after the minute.",
    "in_flight": "This key has as many requests running as it may; retry when one ends.",
    "usd_per_day": "This key's dollar budget for today is spent.",
    "usd_per_month": "This key's dollar budget for this month is spent.",
}


def _metered(limits: KeyLimits, *, priced: bool) -> Metered:
    """The counters a request must pass; dollars only where the model has a price."""

    def nano(usd: float | None) -> int | None:
        return None if usd is None or not priced else round(usd * NANO)

    return Metered(
        rpm=limits.rpm,
        tpm=limits.tpm,
        in_flight=limits.max_in_flight,
        nano_per_day=nano(limits.usd_per_day),
        nano_per_month=nano(limits.usd_per_month),
    )
