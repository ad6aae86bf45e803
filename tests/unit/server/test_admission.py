"""Admission control: slots, the bounded wait queue, and draining, with requests held in flight
by a backend that answers only when the test opens its gate."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from backends.base import Generation, Prompt, SamplingParams, StreamEvent
from backends.scripted import ScriptedBackend
from server.admission import Admission
from server.app import create_app
from server.errors import Overloaded, ShuttingDown
from server.metrics import Metrics
from server.settings import LimitsSettings, Settings
from tests.exposition import Samples
from tests.factories import SCRIPTED_MODEL, chat_body, sse_events


class GatedBackend(ScriptedBackend):
    """A scripted backend whose calls wait until `gate` is set; `entered` counts them."""

    def __init__(self) -> None:
        super().__init__(["held answer"])
        self.gate = asyncio.Event()
        self.entered = 0

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        self.entered += 1
        await self.gate.wait()
        return await super().generate(prompt, params)

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamEvent]:
        self.entered += 1
        await self.gate.wait()
        async for event in super().stream(prompt, params):
            yield event


@contextlib.asynccontextmanager
async def served(
    backend: ScriptedBackend, limits: LimitsSettings
) -> AsyncIterator[tuple[Admission, httpx.AsyncClient]]:
    app: FastAPI = create_app(Settings(limits=limits), backend=backend)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield app.state.admission, client


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition` holds (held requests reach the backend or queue)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def post_chat(client: httpx.AsyncClient, **fields: Any) -> asyncio.Task[httpx.Response]:
    return asyncio.create_task(client.post("/v1/chat/completions", json=chat_body(**fields)))


async def scrape(client: httpx.AsyncClient) -> Samples:
    return Samples.parse((await client.get("/metrics")).text)


def assert_busy(response: httpx.Response, code: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.headers["x-request-id"]
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "service_unavailable_error",
        code,
        None,
    )


async def test_past_the_slots_and_the_queue_a_request_gets_503_at_once() -> None:
    backend = GatedBackend()
    limits = LimitsSettings(max_concurrent_requests=2, max_queued_requests=1, queue_timeout_s=60)
    async with served(backend, limits) as (admission, client):
        # A plain request and a stream take the two slots; a third waits in the queue.
        stream_body = {"model": SCRIPTED_MODEL, "prompt": "2 + 2 =", "stream": True}
        held = [
            post_chat(client),
            asyncio.create_task(client.post("/v1/completions", json=stream_body)),
        ]
        await until(lambda: backend.entered == 2)
        queued = post_chat(client)
        await until(lambda: admission.queued == 1)

        # The backend still holds every call: this answer came without waiting for a slot.
        rejected = await client.post("/v1/chat/completions", json=chat_body())
        assert_busy(rejected, "overloaded")
        completions = await client.post("/v1/completions", json=stream_body)
        assert_busy(completions, "overloaded")

        # The other routes are never queued.
        for path in ("/health", "/ready", "/v1/models", "/metrics"):
            assert (await client.get(path)).status_code == 200, path
        during = await scrape(client)
        assert during.get("ttc_requests_admitted") == 2
        assert during.get("ttc_requests_queued") == 1

        backend.gate.set()
        first, stream = await asyncio.gather(*held)
        assert first.status_code == stream.status_code == 200
        assert sse_events(stream.text)[-1] == "[DONE]"
        # The queued request got the slot a finished one freed.
        assert (await queued).status_code == 200
        assert backend.entered == 3
        after = await scrape(client)
    assert after.get("ttc_rejected_requests_total", reason="queue_full") == 2
    assert after.get("ttc_rejected_requests_total", reason="queue_timeout") == 0
    assert after.get("ttc_requests_admitted") == 0
    assert after.get("ttc_requests_queued") == 0


async def test_a_request_queued_past_the_timeout_gets_503() -> None:
    backend = GatedBackend()
    limits = LimitsSettings(max_concurrent_requests=1, max_queued_requests=4, queue_timeout_s=0.01)
    async with served(backend, limits) as (admission, client):
        held = post_chat(client)
        await until(lambda: backend.entered == 1)
        assert_busy(await client.post("/v1/chat/completions", json=chat_body()), "overloaded")
        assert admission.queued == 0
        backend.gate.set()
        assert (await held).status_code == 200
        samples = await scrape(client)
    assert samples.get("ttc_rejected_requests_total", reason="queue_timeout") == 1


async def test_a_stream_holds_its_slot_until_it_ends() -> None:
    backend = GatedBackend()
    async with served(
        backend, LimitsSettings(max_concurrent_requests=1, max_queued_requests=0)
    ) as (
        admission,
        client,
    ):
        stream = post_chat(client, stream=True)
        await until(lambda: backend.entered == 1)
        assert_busy(await client.post("/v1/chat/completions", json=chat_body()), "overloaded")
        backend.gate.set()
        assert (await stream).status_code == 200
        assert admission.in_flight == 0
        assert (await client.post("/v1/chat/completions", json=chat_body())).status_code == 200


async def test_shutting_down_fails_ready_first_then_turns_new_requests_away() -> None:
    backend = GatedBackend()
    limits = LimitsSettings(max_concurrent_requests=1, max_queued_requests=1, queue_timeout_s=60)
    async with served(backend, limits) as (admission, client):
        assert (await scrape(client)).get("ttc_shutting_down") == 0
        # Not ready, but still serving: a balancer that has not noticed yet gets answers.
        admission.announce_shutdown()
        ready = await client.get("/ready")
        assert_busy(ready, "shutting_down")
        held = post_chat(client)
        await until(lambda: backend.entered == 1)
        queued = post_chat(client)
        await until(lambda: admission.queued == 1)

        # Draining: what waits and what comes is turned away; what runs finishes.
        admission.start_draining()
        assert_busy(await queued, "shutting_down")
        rejected = await client.post("/v1/chat/completions", json=chat_body())
        assert_busy(rejected, "shutting_down")
        assert rejected.headers["connection"] == "close"
        assert (await client.get("/health")).status_code == 200
        backend.gate.set()
        response = await held
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "held answer"
        samples = await scrape(client)
    assert samples.get("ttc_rejected_requests_total", reason="shutting_down") == 2
    assert samples.get("ttc_shutting_down") == 1


def admission(**limits: Any) -> Admission:
    return Admission(LimitsSettings(**limits), Metrics(CollectorRegistry()))


async def test_a_request_cancelled_while_queued_leaves_no_slot_taken() -> None:
    slots = admission(max_concurrent_requests=1, queue_timeout_s=60)
    await slots.acquire()
    waiting = asyncio.create_task(slots.acquire())
    await until(lambda: slots.queued == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert slots.queued == 0
    slots.release()
    assert slots.in_flight == 0


async def test_a_slot_handed_to_a_request_cancelled_before_it_ran_goes_to_the_next() -> None:
    slots = admission(max_concurrent_requests=1, queue_timeout_s=60)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await until(lambda: slots.queued == 2)
    slots.release()  # hands the slot to `first`, which is cancelled before it resumes
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert (slots.in_flight, slots.queued) == (1, 0)
    slots.release()
    assert slots.in_flight == 0


async def test_turned_away_requests_raise_the_errors_the_table_maps() -> None:
    slots = admission(max_concurrent_requests=1, max_queued_requests=0)
    await slots.acquire()
    with pytest.raises(Overloaded):
        await slots.acquire()
    slots.start_draining()
    with pytest.raises(ShuttingDown):
        await slots.acquire()
