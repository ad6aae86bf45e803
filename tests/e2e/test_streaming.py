"""A slow strategy's stream on the embedded model: keep-alive comments while it decides, and the
progress it was asked for, as reasoning, before the answer; read by the openai client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.test_sampling import QUESTION
from tests.factories import gateway_client
from tests.servers import gateway_process

pytestmark = pytest.mark.e2e

KEEPALIVE_S = 0.1
VOTE = {"reasoning_strategy": "majority_vote"}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    # A gateway of its own: comments every 0.1 s, so a vote's silence holds many.
    with gateway_process("--stream-keepalive-s", str(KEEPALIVE_S)) as base:
        yield base


@pytest.fixture
async def client(url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with gateway_client(url) as c:
        yield c


async def test_a_vote_streams_progress_as_reasoning_then_its_answer(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=40,
        temperature=0.8,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={
            **VOTE,
            "reasoning_params": {
                "n": 4,
                "stream_progress": True,
                "return_trace": True,
                "answer_format": "last_number",
            },
        },
    )
    pieces: list[tuple[str, str]] = []  # ("reasoning" | "content", text), in arrival order
    chunks = [chunk async for chunk in stream]
    for chunk in chunks:
        for choice in chunk.choices:
            reasoning = (choice.delta.model_extra or {}).get("reasoning")
            if reasoning:
                pieces.append(("reasoning", reasoning))
            if choice.delta.content:
                pieces.append(("content", choice.delta.content))
    kinds = [kind for kind, _ in pieces]
    assert kinds == ["reasoning", "content"], "one progress line, then the answer in one piece"
    (line, content) = (text for _, text in pieces)
    trace = (chunks[-1].model_extra or {})["reasoning_trace"]
    # The line tells the vote as the trace records it.
    if trace["answer"] is None:
        assert line == "sampled 4 of 4; no answer yet\n"
    else:
        votes = trace["votes"][trace["answer"]]
        assert (
            line == f"sampled 4 of 4; leading answer {trace['answer']} with {votes:g} of 4 votes\n"
        )
    assert content in [c["text"] for c in trace["candidates"]]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_a_vote_keeps_its_connection_alive_with_comments(url: str) -> None:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": QUESTION,
        "max_tokens": 32,
        "temperature": 0.8,
        "stream": True,
        **VOTE,
        "reasoning_params": {"n": 4},
    }
    lines: list[str] = []  # as they arrived
    async with (
        httpx.AsyncClient(timeout=300) as http,
        http.stream("POST", f"{url}/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line:
                lines.append(line)
    answer_at = next(
        i
        for i, line in enumerate(lines)
        if line.startswith("data: {")
        and any(c["delta"].get("content") for c in json.loads(line[6:])["choices"])
    )
    # Four candidates of up to 32 tokens take the CPU model far longer than one interval.
    assert ": keep-alive" in lines[1:answer_at]
    assert set(lines[1:answer_at]) == {": keep-alive"}
    assert lines[-1] == "data: [DONE]"
