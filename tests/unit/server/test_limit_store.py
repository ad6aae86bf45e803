"""The limit stores: the in-memory one and the Redis one (against a real redis-server) pass the
same suite, so either behaves as the other; Redis alone is shared by replicas."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from server.limit_store import (
    LimitStore,
    LimitStoreError,
    MemoryLimitStore,
    Metered,
    RedisLimitStore,
    Reservation,
    retry_after_s,
    windows_at,
)
from tests.factories import free_port

HOLD_S = 60.0


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LimitStore]:
    made: LimitStore
    if request.param == "memory":
        made = MemoryLimitStore(HOLD_S)
    else:
        made = RedisLimitStore(request.getfixturevalue("redis_url"), HOLD_S)
    yield made
    await made.aclose()


@pytest.fixture
def alias() -> str:
    """A key of the test's own: the Redis server is shared by the session."""
    return f"k-{uuid.uuid4().hex[:12]}"


async def admit(
    store: LimitStore, alias: str, limits: Metered, tokens: int = 0, nano: int = 0
) -> Reservation | str:
    return await store.admit(alias, uuid.uuid4().hex, limits, tokens, nano)


async def test_requests_per_minute_admit_as_many_then_refuse(store: LimitStore, alias: str) -> None:
    limits = Metered(rpm=3)
    verdicts = [await admit(store, alias, limits) for _ in range(4)]
    assert [isinstance(v, Reservation) for v in verdicts] == [True, True, True, False]
    assert verdicts[3] == "rpm"


async def test_concurrent_requests_cannot_overdraw_together(store: LimitStore, alias: str) -> None:
    limits = Metered(rpm=5, tpm=1000)
    verdicts = await asyncio.gather(*(admit(store, alias, limits, tokens=100) for _ in range(20)))
    admitted = [v for v in verdicts if isinstance(v, Reservation)]
    assert len(admitted) == 5
    assert set(verdicts) - set(admitted) == {"rpm"}


async def test_a_place_in_flight_is_freed_when_settled(store: LimitStore, alias: str) -> None:
    limits = Metered(in_flight=2)
    first, second = [await admit(store, alias, limits) for _ in range(2)]
    assert await admit(store, alias, limits) == "in_flight"
    assert isinstance(first, Reservation) and isinstance(second, Reservation)
    await store.settle(first, 0, 0)
    assert isinstance(await admit(store, alias, limits), Reservation)


async def test_tokens_reserved_then_settled_at_what_was_spent(
    store: LimitStore, alias: str
) -> None:
    limits = Metered(tpm=100)
    first = await admit(store, alias, limits, tokens=60)
    assert isinstance(first, Reservation)
    # 60 reserved: another 60 would overdraw the minute.
    assert await admit(store, alias, limits, tokens=60) == "tpm"
    await store.settle(first, 10, 0)
    # Only the 10 spent count now: 10 + 60 fits, 10 + 60 + 31 does not.
    assert isinstance(await admit(store, alias, limits, tokens=60), Reservation)
    assert await admit(store, alias, limits, tokens=31) == "tpm"
    assert isinstance(await admit(store, alias, limits, tokens=30), Reservation)


async def test_a_day_budget_holds_dollars_reserved_and_spent(store: LimitStore, alias: str) -> None:
    limits = Metered(nano_per_day=1000, nano_per_month=10_000)
    first = await admit(store, alias, limits, nano=600)
    assert isinstance(first, Reservation)
    assert await admit(store, alias, limits, nano=600) == "usd_per_day"
    await store.settle(first, 0, 300)
    assert isinstance(await admit(store, alias, limits, nano=700), Reservation)
    assert await admit(store, alias, limits, nano=1) == "usd_per_day"


async def test_a_month_budget_spans_the_days(store: LimitStore, alias: str) -> None:
    limits = Metered(nano_per_month=1000)
    assert isinstance(await admit(store, alias, limits, nano=1000), Reservation)
    assert await admit(store, alias, limits, nano=1) == "usd_per_month"


async def test_large_amounts_count_exactly(store: LimitStore, alias: str) -> None:
    # Past 2^53 nano-dollars Lua's numbers would round: $10 000 000 a day.
    limits = Metered(nano_per_day=10**16)
    first = await admit(store, alias, limits, nano=10**16 - 1)
    assert isinstance(first, Reservation)
    assert await admit(store, alias, limits, nano=2) == "usd_per_day"
    assert isinstance(await admit(store, alias, limits, nano=1), Reservation)


async def test_a_refused_request_counts_nothing(store: LimitStore, alias: str) -> None:
    limits = Metered(rpm=2, tpm=100)
    assert await admit(store, alias, limits, tokens=101) == "tpm"
    assert await admit(store, alias, limits, tokens=101) == "tpm"
    # Neither refusal took one of the two requests of the minute.
    assert isinstance(await admit(store, alias, limits, tokens=50), Reservation)
    assert isinstance(await admit(store, alias, limits, tokens=50), Reservation)


async def test_keys_count_apart(store: LimitStore, alias: str) -> None:
    limits = Metered(rpm=1)
    assert isinstance(await admit(store, alias, limits), Reservation)
    assert isinstance(await admit(store, f"{alias}-other", limits), Reservation)
    assert await admit(store, alias, limits) == "rpm"


async def test_unlimited_counts_nothing_and_always_admits(store: LimitStore, alias: str) -> None:
    for _ in range(5):
        reservation = await admit(store, alias, Metered(), tokens=10**9, nano=10**12)
        assert isinstance(reservation, Reservation)
        await store.settle(reservation, 10**9, 10**12)


async def test_two_replicas_share_one_redis(redis_url: str, alias: str) -> None:
    replicas = [RedisLimitStore(redis_url, HOLD_S), RedisLimitStore(redis_url, HOLD_S)]
    limits = Metered(rpm=3)
    try:
        verdicts = [await admit(replicas[i % 2], alias, limits) for i in range(4)]
    finally:
        for replica in replicas:
            await replica.aclose()
    assert verdicts[3] == "rpm"
    assert all(isinstance(v, Reservation) for v in verdicts[:3])


async def test_redis_unreachable_is_a_store_error(alias: str) -> None:
    store = RedisLimitStore(f"redis://127.0.0.1:{free_port()}/0", HOLD_S, timeout_s=1)
    try:
        with pytest.raises(LimitStoreError, match="redis"):
            await admit(store, alias, Metered(rpm=1))
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    ("refusal", "moment", "seconds"),
    [
        ("rpm", datetime(2026, 3, 4, 10, 20, 15, tzinfo=UTC), 45),
        ("tpm", datetime(2026, 3, 4, 10, 20, 59, 500_000, tzinfo=UTC), 1),
        ("in_flight", datetime(2026, 3, 4, 10, 20, 15, tzinfo=UTC), 1),
        ("usd_per_day", datetime(2026, 3, 4, 23, 0, 0, tzinfo=UTC), 3600),
        ("usd_per_month", datetime(2026, 12, 31, 23, 59, 0, tzinfo=UTC), 60),
    ],
)
def test_retry_after_is_when_the_window_rolls_over(
    refusal: str, moment: datetime, seconds: int
) -> None:
    assert retry_after_s(refusal, moment.timestamp()) == seconds  # type: ignore[arg-type]


def test_windows_are_utc() -> None:
    moment = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    minute, day, month = windows_at(moment)
    assert (day, month) == ("2026-12-31", "2026-12")
    assert int(minute) == int(moment // 60)


async def test_redis_windows_follow_redis_s_clock_not_the_gateway_s(
    redis_url: str, alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A gateway whose clock runs two hours ahead would count its requests in another minute,
    # day or month than its peers; the windows it uses are Redis's.
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 7200)
    store = RedisLimitStore(redis_url, HOLD_S)
    try:
        reservation = await store.admit(alias, "r1", Metered(rpm=5), 1, 0)
        assert isinstance(reservation, Reservation)
        assert reservation.windows == windows_at(real())
        assert abs(await store.now() - real()) < 5
    finally:
        await store.aclose()
