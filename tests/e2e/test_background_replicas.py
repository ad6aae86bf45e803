"""Background responses across two gateway processes sharing a real Redis: what one replica
runs, the other reads, streams and cancels; a replica killed mid-run leaves its response
failed within the lease, not stuck `in_progress`. The openai SDK's own calls throughout."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from bench.vllm_standin.answers import SERVED_MODEL
from bench.vllm_standin.state import StandIn
from server.response_store import LAPSED
from tests.factories import gateway_client
from tests.servers import gateway_server

pytestmark = pytest.mark.e2e

LEASE_S = 1.0
# Eight steps to a solution, each call 0.2 s: a search that runs for seconds.
STEPS = "\n\n".join(f"Step {i}: keep adding." for i in range(1, 8)) + "\n\nAnswer: 7"
SEARCH = {
    "reasoning_strategy": "beam_search",
    "reasoning_params": {"n": 2, "beam_width": 1, "num_iterations": 8, "verifier": "llm_judge"},
}


@pytest.fixture
def slow(standin: StandIn) -> Iterator[StandIn]:
    before = standin.options
    standin.options = dataclasses.replace(before, answers=(STEPS,), latency_s=0.2)
    standin.requests.clear()
    yield standin
    standin.options = before


@pytest.fixture
def replicas(slow: StandIn, redis_url: str) -> Iterator[list[tuple[str, Any]]]:
    """Two gateways in front of the stand-in, their kept responses in one Redis."""
    flags = ("--backend", "vllm", "--vllm-url", slow.url, "--redis-url", redis_url)
    lease = ("--responses.lease-s", str(LEASE_S))
    with gateway_server(*flags, *lease) as a, gateway_server(*flags, *lease) as b:
        yield [a, b]


async def create(client: openai.AsyncOpenAI) -> Any:
    return await client.responses.create(
        model=SERVED_MODEL,
        input="What is 3 + 4? Show each step.",
        max_output_tokens=256,
        background=True,
        extra_body=SEARCH,
    )


async def running(a: openai.AsyncOpenAI, b: openai.AsyncOpenAI) -> Any:
    """A search created on replica `a`, once replica `b` reads it running."""
    created = await create(a)
    await until(b, created.id, {"in_progress"})
    return created


async def until(client: openai.AsyncOpenAI, response_id: str, statuses: set[str]) -> Any:
    for _ in range(600):
        shown = await client.responses.retrieve(response_id)
        if shown.status in statuses:
            return shown
        await asyncio.sleep(0.05)
    raise AssertionError(f"{response_id} never reached {statuses}")


async def test_one_replica_runs_it_the_other_reads_and_streams_it(
    replicas: list[tuple[str, Any]], slow: StandIn
) -> None:
    (a_url, _), (b_url, _) = replicas
    async with gateway_client(a_url) as a, gateway_client(b_url) as b:
        created = await create(a)
        running = await until(b, created.id, {"in_progress"})
        assert running.id == created.id
        streamed = [e async for e in await b.responses.retrieve(created.id, stream=True)]
        resumed = [
            e async for e in await b.responses.retrieve(created.id, stream=True, starting_after=5)
        ]
        on_a, on_b = await a.responses.retrieve(created.id), await b.responses.retrieve(created.id)
    assert streamed[-1].type == "response.completed"
    assert [e.sequence_number for e in streamed] == list(range(len(streamed)))
    assert [e.sequence_number for e in resumed] == list(range(6, len(streamed)))
    assert on_a.status == on_b.status == "completed"
    assert on_a.output_text == on_b.output_text == streamed[-1].response.output_text
    assert "Answer: 7" in on_b.output_text


async def test_a_cancel_on_one_replica_stops_the_run_on_the_other(
    replicas: list[tuple[str, Any]], slow: StandIn
) -> None:
    (a_url, _), (b_url, _) = replicas
    async with gateway_client(a_url) as a, gateway_client(b_url) as b:
        created = await running(a, b)
        cancelled = await b.responses.cancel(created.id)
        assert cancelled.status == "cancelled"
        # Replica A sees the cancel at its next lease renewal and stops calling the model.
        deadline = time.monotonic() + LEASE_S + 2.0
        while time.monotonic() < deadline:
            shown = await a.responses.retrieve(created.id)
            if shown.usage is not None:
                break
            await asyncio.sleep(0.05)
        calls = len(slow.requests)
        await asyncio.sleep(1.0)
    assert shown.status == "cancelled"
    assert shown.usage is not None and shown.usage.output_tokens > 0
    assert len(slow.requests) == calls, "the run went on calling the model after its cancel"


async def test_a_replica_killed_mid_run_leaves_its_response_failed(
    replicas: list[tuple[str, Any]], slow: StandIn
) -> None:
    (a_url, a_process), (b_url, _) = replicas
    async with gateway_client(a_url) as a, gateway_client(b_url) as b:
        created = await running(a, b)
        a_process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        failed = await until(b, created.id, {"failed", "completed"})
        waited = time.monotonic() - killed
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.message == LAPSED
    # Within the lease (and the reader's polling), not stuck in progress.
    assert waited < LEASE_S + 2.0
