"""Serving details: disconnects, explicit nulls, stream headers, whose timeout a timeout is."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backends.base import Generation, Prompt, SamplingParams
from backends.scripted import ScriptedBackend
from server.routes.answering import run_until_disconnected
from strategies.limits import Limits
from tests.factories import app_client, chat_body, sse_events


class DisconnectingRequest:
    """Enough of a Starlette request: the client hangs up after `after` seconds."""

    def __init__(self, after: float) -> None:
        self.after = after

    async def receive(self) -> dict[str, Any]:
        await asyncio.sleep(self.after)
        return {"type": "http.disconnect"}


async def test_disconnect_cancels_the_work_and_answers_nobody() -> None:
    cancelled = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "done"

    result = await run_until_disconnected(DisconnectingRequest(0.01).receive, work())
    assert result is None
    assert cancelled.is_set()


async def test_finished_work_is_returned() -> None:
    async def work() -> str:
        return "done"

    assert await run_until_disconnected(DisconnectingRequest(30).receive, work()) == "done"


async def test_explicit_nulls_mean_defaults() -> None:
    backend = ScriptedBackend(["ok"])
    nulls = {k: None for k in ("temperature", "top_p", "n", "stream", "logprobs", "stop", "seed")}
    async with app_client(backend) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(**nulls))
    assert response.status_code == 200
    params = backend.calls[0].params
    assert params is not None and (params.temperature, params.top_p, params.n) == (1.0, 1.0, 1)


async def test_streams_ask_proxies_not_to_buffer() -> None:
    async with app_client(ScriptedBackend(["a"])) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(stream=True))
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"


async def test_a_timeout_inside_is_not_reported_as_the_request_deadline() -> None:
    class RaisesTimeout(ScriptedBackend):
        async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
            raise TimeoutError("some library's own timeout")

    async with app_client(RaisesTimeout(), raise_app_exceptions=False) as client:
        response = await client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"


async def settled_tasks(before: set[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    """Tasks begun since `before` that are still not done after a moment to wind down."""
    current = asyncio.current_task()
    for _ in range(50):
        left = {t for t in asyncio.all_tasks() if t not in before and t is not current}
        if not left:
            break
        await asyncio.sleep(0.01)
    return left


@pytest.mark.parametrize(
    "body",
    [
        chat_body(),
        chat_body(stream=True),
        chat_body(reasoning_strategy="majority_vote", reasoning_params={"n": 3}),
        chat_body(
            reasoning_strategy="beam_search",
            stream=True,
            reasoning_params={"n": 2, "beam_width": 2},
        ),
    ],
    ids=["plain", "stream", "vote", "search-stream"],
)
async def test_no_task_outlives_its_request(body: dict[str, Any]) -> None:
    before = asyncio.all_tasks()
    async with app_client(ScriptedBackend(["x\n\ny"], delay_s=0.001)) as client:
        for _ in range(3):
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200
    assert await settled_tasks(before) == set()


async def test_no_task_outlives_a_request_that_times_out() -> None:
    before = asyncio.all_tasks()
    limits = Limits(request_timeout_s=0.05)
    async with app_client(ScriptedBackend(["x"], delay_s=5), limits=limits) as client:
        response = await client.post("/v1/chat/completions", json=chat_body())
        assert response.status_code == 504
        streamed = await client.post("/v1/chat/completions", json=chat_body(stream=True))
        assert sse_events(streamed.text)[-2]["error"]["code"] == "request_timeout"
    assert await settled_tasks(before) == set()
