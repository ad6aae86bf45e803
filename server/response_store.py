"""Where responses are kept: background responses as they run, and responses stored for
`GET /v1/responses/{id}` and `previous_response_id`; in this process, or in Redis shared by
every replica.

One record per response id: its owner (the API key's alias, "" without keys), its status, the
`response` object as it stands, the events a stream of it sent (numbered from 0, as their
`sequence_number`), and the conversation it ended (for `previous_response_id`). Everything
expires `ttl_s` after it was last written, and an owner keeps at most `max_per_owner` records
(the oldest go first).

A response that runs holds a lease, renewed by the replica running it: a reader that finds a
running response whose lease lapsed (its replica died) marks it failed. The status moves one
way: `queued` -> `in_progress` -> a terminal one (`completed`, `incomplete`, `failed`,
`cancelled`), and once terminal only the runner's final `response` object may still be written
(a cancelled response gets its usage when its run has unwound).

Errors::

    ResponseStoreError  the store could not be reached or answered wrongly (Redis down)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from backends.errors import GatewayError

__all__ = [
    "LAPSED",
    "RUNNING",
    "TERMINAL",
    "MemoryResponseStore",
    "RedisResponseStore",
    "ResponseStore",
    "ResponseStoreError",
    "Status",
    "StoredResponse",
    "lapse_if_dead",
]

Status = Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
RUNNING: frozenset[str] = frozenset({"queued", "in_progress"})
TERMINAL: frozenset[str] = frozenset({"completed", "incomplete", "failed", "cancelled"})


class ResponseStoreError(GatewayError):
    """The store could not be reached or answered wrongly (Redis down)."""


@dataclass
class StoredResponse:
    """A response as the store holds it; `response` is the `response` object as JSON, and
    `conversation` the chat turns it ended (JSON), when it was stored for a follow-up."""

    id: str
    owner: str
    status: str
    response: dict[str, Any]
    conversation: list[dict[str, Any]] | None = None
    created: float = field(default_factory=time.time)


class ResponseStore(Protocol):
    """What the routes and the background runner need of a store."""

    async def create(self, record: StoredResponse) -> None:
        """Keep a new record (and drop the owner's oldest past the bound)."""
        ...

    async def get(self, response_id: str) -> StoredResponse | None:
        """The record, or None (never kept, expired, or dropped)."""
        ...

    async def status(self, response_id: str) -> str | None:
        """The record's status alone (None: no record)."""
        ...

    async def append(self, response_id: str, events: Sequence[str]) -> None:
        """Add streamed events, in order."""
        ...

    async def events(self, response_id: str, start: int) -> list[str]:
        """The events from number `start` on."""
        ...

    async def advance(
        self, response_id: str, status: str, response: dict[str, Any] | None = None
    ) -> bool:
        """Move a running record to `status` (with its `response`); False when it was no
        longer running (cancelled, or failed by a lapsed lease)."""
        ...

    async def finish(
        self,
        response_id: str,
        response: dict[str, Any],
        conversation: list[dict[str, Any]] | None = None,
    ) -> None:
        """The runner's final `response` object (and conversation), whatever the status: a
        cancelled response keeps its status and gets its usage."""
        ...

    async def cancel(self, response_id: str) -> bool:
        """Mark a running record cancelled; False when it had already ended."""
        ...

    async def renew(self, response_id: str, lease_s: float) -> None:
        """The runner is alive: the lease holds `lease_s` more."""
        ...

    async def is_leased(self, response_id: str) -> bool:
        """Whether a runner renewed the lease within its time."""
        ...

    async def aclose(self) -> None:
        """Release the connection."""
        ...


def _failed(response: dict[str, Any], message: str) -> dict[str, Any]:
    return {**response, "status": "failed", "error": {"code": "server_error", "message": message}}


LAPSED = (
    "the replica running this response stopped before it finished (its lease lapsed); "
    "create it again"
)


class MemoryResponseStore:
    """Records in this process: the embedded default and single-replica servers."""

    def __init__(self, ttl_s: float, max_per_owner: int) -> None:
        self.ttl_s = ttl_s
        self.max_per_owner = max_per_owner
        self._records: dict[str, StoredResponse] = {}
        self._events: dict[str, list[str]] = {}
        self._expires: dict[str, float] = {}
        self._leases: dict[str, float] = {}

    def _live(self, response_id: str) -> StoredResponse | None:
        now = time.monotonic()
        if self._expires.get(response_id, now) < now:
            self._drop(response_id)
        return self._records.get(response_id)

    def _touch(self, response_id: str) -> None:
        self._expires[response_id] = time.monotonic() + self.ttl_s

    def _drop(self, response_id: str) -> None:
        for table in (self._records, self._events, self._expires, self._leases):
            table.pop(response_id, None)

    async def create(self, record: StoredResponse) -> None:
        self._records[record.id] = record
        self._events[record.id] = []
        self._touch(record.id)
        mine = sorted(
            (r for r in self._records.values() if r.owner == record.owner),
            key=lambda r: r.created,
        )
        for old in mine[: max(0, len(mine) - self.max_per_owner)]:
            self._drop(old.id)

    async def get(self, response_id: str) -> StoredResponse | None:
        return self._live(response_id)

    async def status(self, response_id: str) -> str | None:
        record = self._live(response_id)
        return record.status if record is not None else None

    async def append(self, response_id: str, events: Sequence[str]) -> None:
        if self._live(response_id) is not None and events:
            self._events[response_id].extend(events)
            self._touch(response_id)

    async def events(self, response_id: str, start: int) -> list[str]:
        return list(self._events.get(response_id, ())[max(0, start) :])

    async def advance(
        self, response_id: str, status: str, response: dict[str, Any] | None = None
    ) -> bool:
        record = self._live(response_id)
        if record is None or record.status not in RUNNING:
            return False
        record.status = status
        record.response = {**(response or record.response), "status": status}
        self._touch(response_id)
        return True

    async def finish(
        self,
        response_id: str,
        response: dict[str, Any],
        conversation: list[dict[str, Any]] | None = None,
    ) -> None:
        record = self._live(response_id)
        if record is None:
            return
        if record.status in RUNNING:
            record.status = response["status"]
        record.response = {**response, "status": record.status}
        record.conversation = conversation
        self._leases.pop(response_id, None)
        self._touch(response_id)

    async def cancel(self, response_id: str) -> bool:
        record = self._live(response_id)
        if record is None or record.status not in RUNNING:
            return False
        record.status = "cancelled"
        record.response = {**record.response, "status": "cancelled"}
        return True

    async def renew(self, response_id: str, lease_s: float) -> None:
        self._leases[response_id] = time.monotonic() + lease_s

    async def is_leased(self, response_id: str) -> bool:
        return self._leases.get(response_id, 0.0) >= time.monotonic()

    async def aclose(self) -> None:
        return None


# A running record moves on; anything else stays (1: moved, 0: not running).
_ADVANCE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'in_progress' then return 0 end
local shown = ARGV[2]
if shown == '' then shown = redis.call('HGET', KEYS[1], 'response') end
local response = cjson.decode(shown)
response['status'] = ARGV[1]
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'response', cjson.encode(response))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
# The final response: a record still running takes its status; a cancelled one keeps its own.
_FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if status == 'queued' or status == 'in_progress' then status = ARGV[1] end
local response = cjson.decode(ARGV[2])
response['status'] = status
redis.call('HSET', KEYS[1], 'status', status, 'response', cjson.encode(response))
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'conversation', ARGV[3]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('DEL', KEYS[2])
return 1
"""
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'in_progress' then return 0 end
local response = cjson.decode(redis.call('HGET', KEYS[1], 'response'))
response['status'] = 'cancelled'
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'response', cjson.encode(response))
return 1
"""


class RedisResponseStore:
    """Records in Redis: every replica given the same `--redis-url` reads and cancels them."""

    def __init__(self, url: str, ttl_s: float, max_per_owner: int, timeout_s: float = 2.0) -> None:
        # Imported here: only servers given --redis-url need the client.
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        self._error: type[Exception] = RedisError
        self.ttl_s = int(ttl_s)
        self.max_per_owner = max_per_owner
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._advance = self._redis.register_script(_ADVANCE)
        self._finish = self._redis.register_script(_FINISH)
        self._cancel = self._redis.register_script(_CANCEL)

    @staticmethod
    def _key(response_id: str, part: str = "") -> str:
        return f"ttc:response:{response_id}{part}"

    async def _call(self, coroutine: Any) -> Any:
        try:
            return await coroutine
        except self._error as exc:
            raise ResponseStoreError(f"redis: {exc}") from exc

    async def create(self, record: StoredResponse) -> None:
        key, owned = self._key(record.id), f"ttc:responses-of:{record.owner}"
        fields = {
            "owner": record.owner,
            "status": record.status,
            "response": orjson.dumps(record.response),
            "created": str(record.created),
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            pipe.expire(key, self.ttl_s)
            pipe.zadd(owned, {record.id: record.created})
            pipe.expire(owned, self.ttl_s)
            pipe.zrange(owned, 0, -self.max_per_owner - 1)
            pipe.zremrangebyrank(owned, 0, -self.max_per_owner - 1)
            done = await self._call(pipe.execute())
        dropped = [old.decode() for old in done[4]]
        if dropped:
            keys = [self._key(i, part) for i in dropped for part in ("", ":events", ":lease")]
            await self._call(self._redis.delete(*keys))

    async def get(self, response_id: str) -> StoredResponse | None:
        raw = await self._call(self._redis.hgetall(self._key(response_id)))
        if not raw:
            return None
        conversation = raw.get(b"conversation")
        return StoredResponse(
            id=response_id,
            owner=raw[b"owner"].decode(),
            status=raw[b"status"].decode(),
            response=orjson.loads(raw[b"response"]),
            conversation=orjson.loads(conversation) if conversation else None,
            created=float(raw[b"created"]),
        )

    async def status(self, response_id: str) -> str | None:
        shown = await self._call(self._redis.hget(self._key(response_id), "status"))
        return shown.decode() if shown is not None else None

    async def append(self, response_id: str, events: Sequence[str]) -> None:
        if not events:
            return
        key = self._key(response_id, ":events")
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, *events)
            pipe.expire(key, self.ttl_s)
            await self._call(pipe.execute())

    async def events(self, response_id: str, start: int) -> list[str]:
        raw = await self._call(self._redis.lrange(self._key(response_id, ":events"), start, -1))
        return [event.decode() for event in raw]

    async def advance(
        self, response_id: str, status: str, response: dict[str, Any] | None = None
    ) -> bool:
        shown = orjson.dumps(response).decode() if response is not None else ""
        moved = await self._call(
            self._advance(keys=[self._key(response_id)], args=[status, shown, self.ttl_s])
        )
        return bool(moved)

    async def finish(
        self,
        response_id: str,
        response: dict[str, Any],
        conversation: list[dict[str, Any]] | None = None,
    ) -> None:
        turns = orjson.dumps(conversation).decode() if conversation is not None else ""
        keys = [self._key(response_id), self._key(response_id, ":lease")]
        args = [response["status"], orjson.dumps(response).decode(), turns, self.ttl_s]
        await self._call(self._finish(keys=keys, args=args))

    async def cancel(self, response_id: str) -> bool:
        return bool(await self._call(self._cancel(keys=[self._key(response_id)])))

    async def renew(self, response_id: str, lease_s: float) -> None:
        key = self._key(response_id, ":lease")
        await self._call(self._redis.set(key, b"1", px=max(1, int(lease_s * 1000))))

    async def is_leased(self, response_id: str) -> bool:
        return bool(await self._call(self._redis.exists(self._key(response_id, ":lease"))))

    async def aclose(self) -> None:
        await self._redis.aclose()


async def lapse_if_dead(store: ResponseStore, record: StoredResponse) -> StoredResponse:
    """`record`, failed if it is running and no runner renewed its lease in time."""
    if record.status in RUNNING and not await store.is_leased(record.id):
        # Read again: the runner may have finished between the two reads.
        current = await store.get(record.id)
        if current is None or current.status not in RUNNING:
            return current or record
        if await store.advance(record.id, "failed", _failed(current.response, LAPSED)):
            return await store.get(record.id) or record
    return record
