"""vLLM's own Prometheus metrics, read before and after a request to see what it cost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import httpx

from tests.exposition import Key, Samples


@dataclass(frozen=True)
class Scrape:
    """A server whose `/metrics` can be read."""

    url: str

    async def metrics(self, client: httpx.AsyncClient) -> Samples:
        response = await client.get(f"{self.url}/metrics")
        response.raise_for_status()
        return Samples.parse(response.text)


@dataclass
class Cost:
    """What a block of requests cost each server, filled in when the block ends."""

    deltas: list[Samples] = field(default_factory=list)

    def total(self, name: str, **labels: str) -> float:
        return sum(delta.get(name, **labels) for delta in self.deltas)


@contextlib.asynccontextmanager
async def measured(servers: Sequence[Scrape]) -> AsyncIterator[Cost]:
    """The change in every server's metrics over the block, once they have settled."""
    async with httpx.AsyncClient(timeout=10) as client:
        before = await asyncio.gather(*(s.metrics(client) for s in servers))
        cost = Cost()
        yield cost
        after = await _settled(client, servers)
        cost.deltas = [a - b for a, b in zip(after, before, strict=True)]


async def _settled(client: httpx.AsyncClient, servers: Sequence[Scrape]) -> list[Samples]:
    # vLLM records a request's stats just after it answers; wait until two scrapes agree.
    last = await asyncio.gather(*(s.metrics(client) for s in servers))
    for _ in range(50):
        await asyncio.sleep(0.2)
        now = await asyncio.gather(*(s.metrics(client) for s in servers))
        if [_counters(m) for m in now] == [_counters(m) for m in last]:
            return list(now)
        last = now
    raise AssertionError("vLLM's metrics did not settle within 10 s")


def _counters(metrics: Samples) -> dict[Key, float]:
    # Gauges (KV-cache use) and process counters (CPU seconds) move on their own.
    return {
        key: value
        for key, value in metrics.values.items()
        if key[0].startswith(("vllm:", "http_requests")) and key[0].endswith(("_total", "_count"))
    }
