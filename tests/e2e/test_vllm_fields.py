"""vLLM's own request fields, sent with the openai client's `extra_body`, through a real gateway:
the forwarded ones reach every backend call as they came (the vLLM stand-in records each), the
ones a strategy applies are applied, the refused ones are a 400 naming them, and the embedded
model honours what it can and names what it cannot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from bench.vllm_standin.answers import SERVED_MODEL
from bench.vllm_standin.state import StandIn
from tests.e2e.conftest import MODEL
from tests.factories import gateway_client

pytestmark = pytest.mark.e2e

QUESTION: list[Any] = [{"role": "user", "content": "What is 3 + 4?"}]
FORWARDED = {
    "priority": 3,
    "bad_words": ["never"],
    "cache_salt": "tenant-a",
    "skip_special_tokens": False,
    "chat_template_kwargs": {"enable_thinking": False},
}


@pytest.fixture
async def standin_client(standin_gateway: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with gateway_client(standin_gateway) as client:
        yield client


async def test_forwarded_fields_reach_every_call_of_a_vote(
    standin_client: openai.AsyncOpenAI, fresh: StandIn
) -> None:
    await standin_client.chat.completions.create(
        model=SERVED_MODEL,
        messages=QUESTION,
        max_tokens=16,
        reasoning_effort="low",
        extra_body={
            **FORWARDED,
            "reasoning_strategy": "majority_vote",
            "reasoning_params": {"n": 4, "early_stop": {"method": "beta", "wave": 1}},
        },
    )
    calls = [r.body for r in fresh.requests if r.path == "/v1/chat/completions"]
    assert len(calls) > 1
    for body in calls:
        for name, value in FORWARDED.items():
            if name == "chat_template_kwargs":
                # The effort sets enable_thinking as vLLM sets it; the client's own wins.
                assert body[name] == {"reasoning_effort": "low", "enable_thinking": False}
            else:
                assert body[name] == value
        # And the effort as its own field, which vLLM hands to the template and harmony.
        assert body["reasoning_effort"] == "low"


async def test_a_search_forwards_them_on_every_step(
    standin_client: openai.AsyncOpenAI, fresh: StandIn
) -> None:
    await standin_client.chat.completions.create(
        model=SERVED_MODEL,
        messages=QUESTION,
        max_tokens=32,
        extra_body={
            "priority": 7,
            "reasoning_strategy": "beam_search",
            "reasoning_params": {
                "n": 2,
                "beam_width": 1,
                "verifier": "llm_judge",
                "step_separator": "\n",
            },
        },
    )
    calls = [r.body for r in fresh.requests if r.path == "/v1/chat/completions"]
    # The search's own calls continue the question; the judge's read it in a prompt of theirs.
    steps = [body for body in calls if body["messages"][0] == QUESTION[0]]
    assert len(steps) > 1
    assert all(body["priority"] == 7 for body in steps)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("use_beam_search", True),
        ("prompt_logprobs", 2),
        ("structured_outputs", {"regex": "[0-9]+"}),
        ("kv_transfer_params", {"do_remote_decode": True}),
        ("request_id", "mine"),
        ("continue_final_message", True),
    ],
)
async def test_refused_fields_are_a_400_naming_them(
    standin_client: openai.AsyncOpenAI, field: str, value: Any
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await standin_client.chat.completions.create(
            model=SERVED_MODEL, messages=QUESTION, max_tokens=8, extra_body={field: value}
        )
    assert raised.value.param == field
    # Left at their "not used" values, they pass.
    neutral = {"use_beam_search": False, "request_id": None, "continue_final_message": False}
    if field in neutral:
        await standin_client.chat.completions.create(
            model=SERVED_MODEL,
            messages=QUESTION,
            max_tokens=8,
            extra_body={field: neutral[field]},
        )


async def test_include_reasoning_false_leaves_the_thinking_out(
    client: openai.AsyncOpenAI,
) -> None:
    shown = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=40,
        temperature=0,
        extra_body={"reasoning_strategy": "cot"},
    )
    hidden = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=40,
        temperature=0,
        extra_body={"reasoning_strategy": "cot", "include_reasoning": False},
    )
    assert (shown.choices[0].message.model_extra or {}).get("reasoning")
    assert not (hidden.choices[0].message.model_extra or {}).get("reasoning")
    assert hidden.choices[0].message.content == shown.choices[0].message.content


async def test_the_embedded_model_names_a_vllm_field_it_cannot_honour(
    client: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(
            model=MODEL, messages=QUESTION, max_tokens=8, extra_body={"min_tokens": 4}
        )
    assert raised.value.param == "min_tokens"
    assert "embedded model" in raised.value.message
    # The effort and the template's arguments it does take.
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=8,
        reasoning_effort="high",
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    assert reply.choices[0].message.content is not None
