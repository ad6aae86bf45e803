"""The kept responses' store, in this process and in a real Redis, held to the same contract:
the owner's bound, a status that only moves on from running, a cancel that a finished run
keeps, a lease that lapses, events read from any number on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from server.response_store import (
    MemoryResponseStore,
    RedisResponseStore,
    ResponseStore,
    StoredResponse,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ResponseStore]:
    kept: ResponseStore
    if request.param == "redis":
        redis_url: str = request.getfixturevalue("redis_url")
        kept = RedisResponseStore(redis_url, ttl_s=60, max_per_owner=2)
    else:
        kept = MemoryResponseStore(ttl_s=60, max_per_owner=2)
    yield kept
    await kept.aclose()


def fresh(owner: str, created: float = 0.0) -> StoredResponse:
    response_id = f"resp_{uuid.uuid4().hex}"
    return StoredResponse(
        response_id, owner, "queued", {"id": response_id, "status": "queued"}, created=created
    )


async def test_an_owner_keeps_its_newest_up_to_the_bound(store: ResponseStore) -> None:
    owner = uuid.uuid4().hex
    records = [fresh(owner, float(i)) for i in range(3)]
    for record in records:
        await store.create(record)
    kept = [await store.get(r.id) is not None for r in records]
    assert kept == [False, True, True]


async def test_a_status_moves_on_only_from_running_and_a_cancel_keeps(
    store: ResponseStore,
) -> None:
    record = fresh(uuid.uuid4().hex)
    await store.create(record)
    assert await store.status(record.id) == "queued"
    assert await store.status("resp_never_made") is None
    assert await store.advance(record.id, "in_progress")
    assert await store.status(record.id) == "in_progress"
    shown = await store.get(record.id)
    assert shown is not None and shown.response["status"] == "in_progress"
    assert await store.cancel(record.id)
    assert not await store.cancel(record.id)
    assert not await store.advance(record.id, "in_progress")
    # The run's own end comes after: the status stays cancelled, the usage is written.
    await store.finish(record.id, {"id": record.id, "status": "completed", "usage": {"x": 1}})
    ended = await store.get(record.id)
    assert ended is not None and ended.status == "cancelled"
    assert ended.response == {"id": record.id, "status": "cancelled", "usage": {"x": 1}}


async def test_a_finished_run_keeps_its_conversation_and_events(store: ResponseStore) -> None:
    record = fresh(uuid.uuid4().hex)
    await store.create(record)
    await store.append(record.id, ["e0", "e1"])
    await store.append(record.id, ["e2"])
    turns = [{"role": "user", "content": "hi"}]
    await store.finish(record.id, {"id": record.id, "status": "completed"}, turns)
    ended = await store.get(record.id)
    assert ended is not None and ended.status == "completed" and ended.conversation == turns
    assert await store.events(record.id, 0) == ["e0", "e1", "e2"]
    assert await store.events(record.id, 2) == ["e2"]
    assert await store.events(record.id, 3) == []


async def test_a_lease_holds_until_it_lapses(store: ResponseStore) -> None:
    record = fresh(uuid.uuid4().hex)
    await store.create(record)
    assert not await store.is_leased(record.id)
    await store.renew(record.id, lease_s=0.2)
    assert await store.is_leased(record.id)
    await asyncio.sleep(0.4)
    assert not await store.is_leased(record.id)
