"""No client can stall the gateway: under real uvicorn, while each attack runs, `/health` answers
at once and other clients are served. Each attack froze or blocked the gateway before: a
client's catastrophic regex over the answers (14 s a request, doubling with each character),
math-verify comparing a huge factorial (past 25 s, in threads that could not be stopped), and
request bodies that never finish (they held the admission slots, so everyone else got 503)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

import httpx
import pytest

from bench.vllm_standin.answers import ANSWER, SERVED_MODEL
from bench.vllm_standin.state import StandIn
from tests.servers import gateway_process

pytestmark = pytest.mark.e2e

# Slower than this, `/health` counts as stalled; every attack held it for seconds or more.
HEALTHY_S = 1.0
SLOTS = 2


@pytest.fixture(scope="module")
def gateway(standin: StandIn) -> Iterator[str]:
    with gateway_process(
        "--backend",
        "vllm",
        "--vllm-url",
        standin.url,
        "--limits.max-concurrent-requests",
        str(SLOTS),
        "--limits.max-queued-requests",
        "0",
        "--limits.body-timeout-s",
        "4",
        "--answer-match-timeout-s",
        "1",
    ) as url:
        yield url


class Answers:
    """Sets what the stand-in's model writes, choice i the i-th text (round robin)."""

    def __init__(self, standin: StandIn) -> None:
        self.standin = standin

    def write(self, *texts: str) -> None:
        self.standin.options = dataclasses.replace(self.standin.options, answers=texts)


@pytest.fixture
def answers(standin: StandIn) -> Iterator[Answers]:
    yield Answers(standin)
    standin.options = dataclasses.replace(standin.options, answers=(ANSWER,))


@pytest.fixture
async def client(gateway: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as http:
        yield http


async def health_while(client: httpx.AsyncClient, attack: Awaitable[Any]) -> tuple[Any, float]:
    """What `attack` returned, and the slowest `/health` answer while it ran."""
    task = asyncio.ensure_future(attack)
    slowest = 0.0
    while not task.done():
        started = time.perf_counter()
        assert (await client.get("/health")).status_code == 200
        slowest = max(slowest, time.perf_counter() - started)
        await asyncio.sleep(0.05)
    return await task, slowest


def vote(**params: Any) -> dict[str, Any]:
    return {
        "model": SERVED_MODEL,
        "messages": [{"role": "user", "content": "What is 3 + 4?"}],
        "max_tokens": 64,
        "reasoning_strategy": "majority_vote",
        "reasoning_params": {"return_trace": True, **params},
    }


async def test_a_catastrophic_answer_pattern_does_not_stall(
    client: httpx.AsyncClient, answers: Answers
) -> None:
    # Exponential in the answer's length under Python's re; linear under RE2.
    answers.write("x" * 40)
    attack = [
        client.post(
            "/v1/chat/completions",
            json=vote(n=4, answer_format="regex", answer_pattern=r"(?:.|.)*\x00"),
        )
        for _ in range(SLOTS)
    ]
    replies, slowest = await health_while(client, asyncio.gather(*attack))
    assert [r.status_code for r in replies] == [200] * SLOTS
    assert slowest < HEALTHY_S


async def test_answers_math_verify_cannot_compare_in_time_do_not_stall(
    client: httpx.AsyncClient, answers: Answers
) -> None:
    # math-verify would evaluate (10^9)! to compare it with 2: its worker is killed at the
    # server's 1 s, and the answers are grouped by their text, as the trace says.
    answers.write(r"The answer is $\boxed{\left(10^{9}\right)!}$", r"The answer is $\boxed{2}$")
    attack = [client.post("/v1/chat/completions", json=vote(n=4)) for _ in range(SLOTS)]
    replies, slowest = await health_while(client, asyncio.gather(*attack))
    assert [r.status_code for r in replies] == [200] * SLOTS
    for reply in replies:
        assert reply.json()["reasoning_trace"].get("answers_compared_as_text"), reply.json()
    assert slowest < HEALTHY_S
    # The pool has a fresh worker: the next comparison is made by math-verify again.
    answers.write(r"The answer is $\boxed{\frac{1}{2}}$", r"The answer is $\boxed{0.5}$")
    reply = await client.post("/v1/chat/completions", json=vote(n=2))
    assert "answers_compared_as_text" not in reply.json()["reasoning_trace"]
    assert list(reply.json()["reasoning_trace"]["votes"].values()) == [2.0]


async def stalled_body(url: str) -> bytes:
    """A request whose body never finishes: its headers and `{`, then nothing; what the
    gateway answers when it gives up on it."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    await writer.drain()
    try:
        # All of it, until the gateway closes: its headers and body may come in two reads.
        return await reader.read(-1)
    finally:
        writer.close()


async def test_bodies_that_never_finish_hold_no_slot(
    client: httpx.AsyncClient, gateway: str
) -> None:
    stalled = [asyncio.create_task(stalled_body(gateway)) for _ in range(SLOTS)]
    await asyncio.sleep(0.3)

    async def others() -> list[httpx.Response]:
        return [await client.post("/v1/chat/completions", json=vote(n=2)) for _ in range(3)]

    served, slowest = await health_while(client, others())
    # With every slot held and no queue, these were 503s for as long as the sockets stayed.
    assert [r.status_code for r in served] == [200] * 3
    assert slowest < HEALTHY_S
    for answer in await asyncio.wait_for(asyncio.gather(*stalled), 20):
        assert answer.startswith(b"HTTP/1.1 408")
        assert b"body_timeout" in answer
