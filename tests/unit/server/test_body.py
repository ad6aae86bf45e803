"""Request bodies: bounded in size (413) and in time (408), and read before a request takes an
admission slot, so stalled or huge bodies cannot turn other clients away."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message

from backends.scripted import ScriptedBackend
from server.app import create_app
from server.settings import LimitsSettings, Settings
from tests.factories import chat_body, http_scope

LIMITS = LimitsSettings(
    max_concurrent_requests=1, max_queued_requests=0, max_body_bytes=4096, body_timeout_s=0.5
)


@pytest.fixture
async def app() -> AsyncIterator[FastAPI]:
    made = create_app(Settings(limits=LIMITS), backend=ScriptedBackend(["4"]))
    async with made.router.lifespan_context(made):
        yield made


def client_of(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


async def stalled_request(app: FastAPI) -> list[Message]:
    """A chat request that sends its headers and `{`, then nothing; what it was answered."""
    sent: list[Message] = []
    first = True
    forever = asyncio.Event()

    async def receive() -> Message:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b"{", "more_body": True}
        await forever.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = http_scope("/v1/chat/completions")
    await app(scope, receive, send)
    return sent


async def test_stalled_bodies_hold_no_slot_and_time_out(app: FastAPI) -> None:
    # Two stalled bodies used to hold the one slot and the queue: every other client got 503.
    stalled = [asyncio.create_task(stalled_request(app)) for _ in range(2)]
    await asyncio.sleep(0.05)
    async with client_of(app) as client:
        served = await client.post("/v1/chat/completions", json=chat_body())
        health = await client.get("/health")
    assert (served.status_code, health.status_code) == (200, 200)
    for answered in await asyncio.wait_for(asyncio.gather(*stalled), 10):
        assert answered[0]["status"] == 408
        error = json.loads(answered[1]["body"])["error"]
        assert error["code"] == "body_timeout"


async def test_a_body_over_the_limit_is_a_413(app: FastAPI) -> None:
    big = chat_body("x" * 5000)
    async with client_of(app) as client:
        declared = await client.post("/v1/chat/completions", json=big)

        async def chunks() -> AsyncIterator[bytes]:
            data = json.dumps(big).encode()
            for start in range(0, len(data), 1000):
                yield data[start : start + 1000]

        streamed = await client.post(
            "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
        )
        fits = await client.post("/v1/chat/completions", json=chat_body("x" * 100))
    for refused in (declared, streamed):
        assert refused.status_code == 413
        assert refused.json()["error"]["code"] == "request_too_large"
    assert fits.status_code == 200
