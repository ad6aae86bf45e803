"""Where keys' counters live: in this process, or in Redis shared by every replica.

One small interface, `LimitStore`: `admit` checks every limit of a key and, only if all hold,
counts the request and reserves what it may spend, in one atomic step (one Lua script in Redis;
no await in between in memory), so that concurrent requests, on any replica, cannot overdraw a
key together. `settle` replaces the reservation by what the request really spent and frees its
place in flight.

Windows are fixed and in UTC: requests and tokens per minute count in the current minute, dollars
per day and per month in the current day and month. A request in flight holds a place until it
is settled, or at most `hold_s` (the request deadline and a margin) should its replica die.
Dollars are counted as integer nano-dollars.

Errors::

    LimitStoreError     the store could not be reached or answered wrongly (Redis down)
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

__all__ = [
    "LimitStore",
    "LimitStoreError",
    "MemoryLimitStore",
    "Metered",
    "RedisLimitStore",
    "Refusal",
    "Reservation",
    "Window",
    "retry_after_s",
    "windows_at",
]

Refusal = Literal["rpm", "tpm", "in_flight", "usd_per_day", "usd_per_month"]
Window = Literal["minute", "day", "month"]
# What each refusal waits for.
_WINDOW_OF: dict[Refusal, Window | None] = {
    "rpm": "minute",
    "tpm": "minute",
    "in_flight": None,
    "usd_per_day": "day",
    "usd_per_month": "month",
}
NANO = 1_000_000_000


class LimitStoreError(Exception):
    """The store could not be reached or answered wrongly (Redis down)."""


@dataclass(frozen=True)
class Metered:
    """The limits `admit` enforces (None: not limited); dollars in nano-dollars."""

    rpm: int | None = None
    tpm: int | None = None
    in_flight: int | None = None
    nano_per_day: int | None = None
    nano_per_month: int | None = None


@dataclass(frozen=True)
class Reservation:
    """One request's claim on a key: what it reserved, in which windows."""

    alias: str
    request_id: str
    limits: Metered
    tokens: int
    nano: int
    windows: tuple[str, str, str] = field(default=("", "", ""))  # minute, day, month


def windows_at(now: float) -> tuple[str, str, str]:
    """The ids of the minute, day and month `now` (epoch seconds) falls in, in UTC."""
    return _windows_of_minute(int(now // 60))


@functools.lru_cache(maxsize=2)
def _windows_of_minute(minute: int) -> tuple[str, str, str]:
    # Every request of a minute shares them: format the dates once a minute, not per request.
    moment = datetime.fromtimestamp(minute * 60, UTC)
    return str(minute), moment.strftime("%Y-%m-%d"), moment.strftime("%Y-%m")


def retry_after_s(refusal: Refusal, now: float) -> int:
    """Whole seconds until the window of `refusal` rolls over (1 for a place in flight)."""
    window = _WINDOW_OF[refusal]
    if window is None:
        return 1
    moment = datetime.fromtimestamp(now, UTC)
    if window == "minute":
        end = (math.floor(now / 60) + 1) * 60.0
    elif window == "day":
        end = moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() + 86400
    else:
        year, month = (
            (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
        )
        end = datetime(year, month, 1, tzinfo=UTC).timestamp()
    return max(1, math.ceil(end - now))


class LimitStore(Protocol):
    """Counters of every key, shared by whoever shares the store."""

    async def admit(
        self, alias: str, request_id: str, limits: Metered, tokens: int, nano: int
    ) -> Reservation | Refusal:
        """Count the request and reserve `tokens` and `nano` if every limit allows it, else
        change nothing and say which limit refused it."""
        ...

    async def settle(self, reservation: Reservation, tokens: int, nano: int) -> None:
        """The request is over, having spent `tokens` and `nano`: count that instead of its
        reservation, and free its place in flight."""
        ...

    async def now(self) -> float:
        """The time the store's windows follow, in seconds since the epoch."""
        ...

    async def aclose(self) -> None:
        """Release the store's connections."""
        ...


class MemoryLimitStore:
    """The counters of one process: limits hold per replica, not across replicas."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self._counters: dict[tuple[str, str], tuple[str, int]] = {}
        self._in_flight: dict[str, dict[str, float]] = {}

    def _get(self, alias: str, kind: str, window: str) -> int:
        held = self._counters.get((alias, kind))
        return held[1] if held is not None and held[0] == window else 0

    def _add(self, alias: str, kind: str, window: str, amount: int) -> None:
        self._counters[alias, kind] = (window, self._get(alias, kind, window) + amount)

    async def admit(
        self, alias: str, request_id: str, limits: Metered, tokens: int, nano: int
    ) -> Reservation | Refusal:
        now = time.time()
        minute, day, month = windows_at(now)
        running = self._in_flight.setdefault(alias, {})
        for held, expiry in list(running.items()):
            if expiry <= now:
                del running[held]
        checks: tuple[tuple[Refusal, int | None, str, str, int], ...] = (
            ("rpm", limits.rpm, "rpm", minute, 1),
            ("tpm", limits.tpm, "tpm", minute, tokens),
            ("usd_per_day", limits.nano_per_day, "day", day, nano),
            ("usd_per_month", limits.nano_per_month, "month", month, nano),
        )
        if limits.rpm is not None and self._get(alias, "rpm", minute) + 1 > limits.rpm:
            return "rpm"
        if limits.in_flight is not None and len(running) + 1 > limits.in_flight:
            return "in_flight"
        for refusal, limit, kind, window, amount in checks[1:]:
            if limit is not None and self._get(alias, kind, window) + amount > limit:
                return refusal
        for _, limit, kind, window, amount in checks:
            if limit is not None:
                self._add(alias, kind, window, amount)
        if limits.in_flight is not None:
            running[request_id] = now + self.hold_s
        return Reservation(alias, request_id, limits, tokens, nano, (minute, day, month))

    async def settle(self, reservation: Reservation, tokens: int, nano: int) -> None:
        alias, limits = reservation.alias, reservation.limits
        minute, day, month = reservation.windows
        adjustments = (
            (limits.tpm, "tpm", minute, tokens - reservation.tokens),
            (limits.nano_per_day, "day", day, nano - reservation.nano),
            (limits.nano_per_month, "month", month, nano - reservation.nano),
        )
        for limit, kind, window, delta in adjustments:
            held = self._counters.get((alias, kind))
            # A window that has rolled over is not charged again.
            if limit is not None and held is not None and held[0] == window:
                self._add(alias, kind, window, delta)
        self._in_flight.get(alias, {}).pop(reservation.request_id, None)

    async def now(self) -> float:
        return time.time()

    async def aclose(self) -> None:
        pass


# KEYS: rpm, tpm, in flight, day, month counters. ARGV: their limits (-1: none), tokens and
# nano-dollars to reserve, now in ms, how long a place in flight is held in ms, the request id.
# Checks every limit, then applies all or nothing.
_ADMIT = """
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
                tonumber(ARGV[4]), tonumber(ARGV[5])}
local tokens, nano = tonumber(ARGV[6]), tonumber(ARGV[7])
local now, hold = tonumber(ARGV[8]), tonumber(ARGV[9])
local function used(key) return tonumber(redis.call('GET', key) or '0') end
if limits[1] >= 0 and used(KEYS[1]) + 1 > limits[1] then return 'rpm' end
if limits[3] >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) + 1 > limits[3] then return 'in_flight' end
end
if limits[2] >= 0 and used(KEYS[2]) + tokens > limits[2] then return 'tpm' end
if limits[4] >= 0 and used(KEYS[4]) + nano > limits[4] then return 'usd_per_day' end
if limits[5] >= 0 and used(KEYS[5]) + nano > limits[5] then return 'usd_per_month' end
-- Amounts as given: Lua would write a large number in exponent form, which INCRBY refuses.
local adds = {'1', ARGV[6], '0', ARGV[7], ARGV[7]}
local ttls = {120, 120, 0, 172800, 2764800}
for i = 1, 5 do
  if i ~= 3 and limits[i] >= 0 then
    redis.call('INCRBY', KEYS[i], adds[i])
    redis.call('EXPIRE', KEYS[i], ttls[i])
  end
end
if limits[3] >= 0 then
  redis.call('ZADD', KEYS[3], now + hold, ARGV[10])
  redis.call('PEXPIRE', KEYS[3], hold)
end
return 'ok'
"""

# KEYS: tpm, day, month counters, in flight. ARGV: token and nano-dollar corrections, the
# request id. A counter whose window has rolled over (gone) is not charged again.
_SETTLE = """
local deltas = {ARGV[1], ARGV[2], ARGV[2]}
for i = 1, 3 do
  if tonumber(deltas[i]) ~= 0 and redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCRBY', KEYS[i], deltas[i])
  end
end
redis.call('ZREM', KEYS[4], ARGV[3])
return 'ok'
"""


# How often a gateway reads Redis's clock again.
_CLOCK_REFRESH_S = 30.0


class RedisLimitStore:
    """The counters in Redis: every replica given the same `--redis-url` shares them."""

    def __init__(self, url: str, hold_s: float, timeout_s: float = 2.0) -> None:
        # Imported here: only servers given --redis-url need the client.
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        self._error: type[Exception] = RedisError
        self.hold_s = hold_s
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            decode_responses=True,
        )
        self._admit = self._redis.register_script(_ADMIT)
        self._settle = self._redis.register_script(_SETTLE)
        # Windows follow Redis's clock, not each gateway's: the offset is read with TIME now and
        # then (not on every request), so replicas with skewed clocks share their windows.
        self._offset_s = 0.0
        self._offset_read_at = -math.inf

    async def now(self) -> float:
        """Redis's time, in seconds since the epoch (this clock plus the offset last read)."""
        if time.monotonic() - self._offset_read_at > _CLOCK_REFRESH_S:
            before = time.time()
            try:
                seconds, micros = await self._redis.time()
            except self._error as exc:
                raise LimitStoreError(f"redis: {exc}") from exc
            after = time.time()
            self._offset_s = seconds + micros / 1e6 - (before + after) / 2
            self._offset_read_at = time.monotonic()
        return time.time() + self._offset_s

    @staticmethod
    def _keys(alias: str, windows: tuple[str, str, str]) -> dict[str, str]:
        minute, day, month = windows
        base = f"ttc:key:{{{alias}}}"  # one hash slot per key, for Redis Cluster
        return {
            "rpm": f"{base}:rpm:{minute}",
            "tpm": f"{base}:tpm:{minute}",
            "in_flight": f"{base}:in_flight",
            "day": f"{base}:usd:{day}",
            "month": f"{base}:usd:{month}",
        }

    async def admit(
        self, alias: str, request_id: str, limits: Metered, tokens: int, nano: int
    ) -> Reservation | Refusal:
        now = await self.now()
        windows = windows_at(now)
        keys = self._keys(alias, windows)
        args: list[int | str] = [
            *(
                -1 if limit is None else limit
                for limit in (
                    limits.rpm,
                    limits.tpm,
                    limits.in_flight,
                    limits.nano_per_day,
                    limits.nano_per_month,
                )
            ),
            tokens,
            nano,
            int(now * 1000),
            int(self.hold_s * 1000),
            request_id,
        ]
        try:
            verdict = await self._admit(keys=list(keys.values()), args=args)
        except self._error as exc:
            raise LimitStoreError(f"redis: {exc}") from exc
        if verdict == "ok":
            return Reservation(alias, request_id, limits, tokens, nano, windows)
        if verdict not in _WINDOW_OF:
            raise LimitStoreError(f"redis answered {verdict!r}")
        refusal: Refusal = verdict
        return refusal

    async def settle(self, reservation: Reservation, tokens: int, nano: int) -> None:
        keys = self._keys(reservation.alias, reservation.windows)
        limits = reservation.limits
        token_delta = tokens - reservation.tokens if limits.tpm is not None else 0
        has_budget = limits.nano_per_day is not None or limits.nano_per_month is not None
        nano_delta = nano - reservation.nano if has_budget else 0
        try:
            await self._settle(
                keys=[keys["tpm"], keys["day"], keys["month"], keys["in_flight"]],
                args=[token_delta, nano_delta, reservation.request_id],
            )
        except self._error as exc:
            raise LimitStoreError(f"redis: {exc}") from exc

    async def aclose(self) -> None:
        await self._redis.aclose()
