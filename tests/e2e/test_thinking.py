"""A reasoning model's thinking through a real gateway, on the vLLM stand-in as a thinking model
(`bench.vllm_standin.thinking`): told apart from the answer, counted as reasoning tokens, capped
(budget forcing), cut short by probes that agree, and refused where a strategy cannot control
it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

from bench.vllm_standin.answers import ANSWER, SERVED_MODEL, words
from bench.vllm_standin.state import StandIn
from tests.exposition import Samples
from tests.factories import gateway_client

pytestmark = pytest.mark.e2e

# Settles on 7 after a detour through 8, then keeps checking: most of it is double-checking.
THOUGHT = (
    "<think>\nThe question asks for three plus four. Maybe it is 8 ... no, it is 7. Let me "
    "check that by counting up from three: it gives 7. So 7. Counting on fingers gives 7 again. "
    "Once more, to be safe: 7. I am sure the sum is 7. Nothing changes it: 7.</think>"
)
ANSWERED = "Answer: 7"
QUESTION: list[Any] = [{"role": "user", "content": "What is 3 + 4?"}]


@pytest.fixture
def thinking(standin: StandIn) -> Iterator[StandIn]:
    standin.options = dataclasses.replace(standin.options, answers=(f"{THOUGHT}\n\n{ANSWERED}",))
    standin.requests.clear()
    yield standin
    standin.options = dataclasses.replace(standin.options, answers=(ANSWER,))
    assert standin.violations == []


@pytest.fixture
async def client(standin_gateway: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with gateway_client(standin_gateway) as c:
        yield c


def reasoning_of(message: Any) -> str:
    return str((message.model_extra or {}).get("reasoning") or "")


async def ask(client: openai.AsyncOpenAI, **fields: Any) -> Any:
    extra = {k: fields.pop(k) for k in list(fields) if k not in ("max_tokens", "n")}
    return await client.chat.completions.create(
        model=SERVED_MODEL,
        messages=QUESTION,
        max_tokens=fields.get("max_tokens", 200),
        n=fields.get("n", 1),
        extra_body=extra,
    )


async def test_the_thinking_is_told_apart_and_counted(
    client: openai.AsyncOpenAI, thinking: StandIn
) -> None:
    reply = await ask(client)
    message = reply.choices[0].message
    assert message.content == ANSWERED
    assert reasoning_of(message).startswith("The question asks")
    assert "</think>" not in reasoning_of(message) and "<think>" not in (message.content or "")
    details = reply.usage.completion_tokens_details
    # Most of what it wrote was thinking: the answer is two of its words.
    assert 0 < details.reasoning_tokens < reply.usage.completion_tokens
    assert reply.usage.completion_tokens - details.reasoning_tokens <= 4


async def test_a_stream_sends_the_thinking_as_reasoning(
    client: openai.AsyncOpenAI, thinking: StandIn
) -> None:
    stream = await client.chat.completions.create(
        model=SERVED_MODEL, messages=QUESTION, max_tokens=200, stream=True
    )
    content, reasoning = "", ""
    async for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            content += delta.content or ""
            reasoning += str((delta.model_extra or {}).get("reasoning") or "")
    assert content.strip() == ANSWERED
    assert "Maybe it is 8" in reasoning and "</think>" not in reasoning


async def test_a_thinking_budget_closes_the_thinking_and_the_model_answers(
    client: openai.AsyncOpenAI, thinking: StandIn
) -> None:
    reply = await ask(client, thinking_token_budget=12)
    message = reply.choices[0].message
    assert message.content == ANSWERED
    assert reply.usage.completion_tokens_details.reasoning_tokens == 12
    assert len(words(reasoning_of(message))) <= 12
    assert "budget" in (reply.model_extra or {})["reasoning_stopped_early"]
    # The server wrote the end of the thinking, and the model answered after it.
    forced = [r.body for r in thinking.requests if r.path == "/v1/chat/completions"][-1]
    assert forced["continue_final_message"] is True
    assert forced["messages"][-1]["content"].endswith("</think>\n\n")


def spent_thinking(reply: Any) -> int:
    return int(reply.usage.completion_tokens_details.reasoning_tokens)


async def test_probes_that_agree_end_the_thinking_early(
    client: openai.AsyncOpenAI, thinking: StandIn, standin_gateway: str
) -> None:
    full = await ask(client)
    probed = await ask(
        client, reasoning_params={"thinking": {"probe": {"interval": 8, "agree": 2}}}
    )
    assert probed.choices[0].message.content == ANSWERED
    # It stopped once two probes in a row said 7, before the double-checking was over.
    thought = reasoning_of(probed.choices[0].message)
    assert full.choices[0].message.content == ANSWERED
    assert len(thought) < len(reasoning_of(full.choices[0].message))
    assert "Nothing changes it" not in thought
    assert "probes agreed" in (probed.model_extra or {})["reasoning_stopped_early"]
    # The probes asked for the answer in the middle of the thinking.
    probes = [
        r.body
        for r in thinking.requests
        if r.path == "/v1/chat/completions"
        and r.body["messages"][-1]["content"].endswith("\\boxed{")
    ]
    assert len(probes) >= 2 and all(p["temperature"] == 0 for p in probes)
    # The metrics count the thinking and the probes apart from the answers.
    async with httpx.AsyncClient() as plain:
        scrape = Samples.parse((await plain.get(f"{standin_gateway}/metrics")).text)
    assert scrape.get("ttc_thinking_tokens_total", strategy="none") >= spent_thinking(probed)
    assert scrape.get("ttc_thinking_probe_tokens_total", strategy="none") > 0


async def test_every_candidate_of_a_vote_thinks_under_the_controls(
    client: openai.AsyncOpenAI, thinking: StandIn
) -> None:
    reply = await ask(
        client,
        reasoning_strategy="majority_vote",
        reasoning_params={
            "n": 3,
            "return_trace": True,
            "thinking": {"max_tokens": 30, "probe": {"interval": 8, "agree": 2}},
        },
    )
    assert reply.choices[0].message.content == ANSWERED
    trace = (reply.model_extra or {})["reasoning_trace"]
    assert list(trace["votes"]) == ["7"]
    for candidate in trace["candidates"]:
        assert candidate["answer"] == "7"
        assert 0 < candidate["thinking_tokens"] <= 30
        assert "<think>" not in candidate["text"]


async def test_enable_thinking_false_answers_without_thinking(
    client: openai.AsyncOpenAI, thinking: StandIn
) -> None:
    reply = await ask(client, chat_template_kwargs={"enable_thinking": False})
    assert reply.choices[0].message.content == ANSWERED
    assert not reasoning_of(reply.choices[0].message)
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"reasoning_strategy": "beam_search", "reasoning_params": {"thinking": {}}},
            "reasoning_params.thinking",
        ),
        ({"reasoning_strategy": "cot", "thinking_token_budget": 10}, "thinking_token_budget"),
        ({"thinking_token_budget": 200}, "thinking_token_budget"),
    ],
)
async def test_thinking_controls_a_strategy_cannot_apply_are_a_400(
    client: openai.AsyncOpenAI, thinking: StandIn, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await ask(client, **fields)
    assert raised.value.param == param


async def test_a_search_over_a_model_that_thinks_is_a_400_saying_why(
    client: openai.AsyncOpenAI, thinking: StandIn
) -> None:
    # No thinking control asked: the first step shows the model thinks, and the search stops
    # there rather than scoring the thinking as steps of a solution.
    with pytest.raises(openai.BadRequestError) as raised:
        await ask(
            client,
            reasoning_strategy="beam_search",
            reasoning_params={"n": 2, "beam_width": 1, "verifier": "llm_judge"},
        )
    assert raised.value.param == "reasoning_strategy"
    assert "enable_thinking" in raised.value.message
    # With thinking off, it searches.
    reply = await ask(
        client,
        reasoning_strategy="beam_search",
        reasoning_params={"n": 2, "beam_width": 1, "verifier": "llm_judge"},
        chat_template_kwargs={"enable_thinking": False},
    )
    assert reply.choices[0].message.content
