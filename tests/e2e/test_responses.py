"""The openai SDK's Responses API (`responses.create`, streamed, and the `responses.stream`
helper) against a real gateway serving the real embedded model, with strategies in extra_body.

Greedy decoding (temperature 0) makes answers repeatable, so streamed and non-streamed answers
are compared exactly; the model's words themselves are never asserted.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
from openai.types.responses import ResponseFunctionToolCall

from tests.e2e import test_tools_embedded
from tests.e2e.conftest import MODEL
from tests.factories import flat_tool

pytestmark = pytest.mark.e2e

QUESTION = "What is 3 + 4?"
COT: dict[str, Any] = {
    "model": MODEL,
    "input": QUESTION,
    "max_output_tokens": 64,
    "temperature": 0,
    "extra_body": {"reasoning_strategy": "cot"},
}


# The chat tool tests' function, flat.
WEATHER = flat_tool(test_tools_embedded.WEATHER, strict=True)
WEATHER_QUESTION = "What is the weather in Paris right now?"


def reasoning_of(response: Any) -> str:
    """The text of a response's reasoning items."""
    return "".join(
        part.text
        for item in response.output
        if item.type == "reasoning"
        for part in item.content or []
    )


async def test_plain_response_with_usage(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(
        model=MODEL,
        input=QUESTION,
        instructions="Answer in one short sentence.",
        max_output_tokens=16,
        temperature=0,
    )
    assert response.status in ("completed", "incomplete")
    assert response.output_text
    assert [item.type for item in response.output] == ["message"]
    usage = response.usage
    assert usage is not None
    assert 0 < usage.output_tokens <= 16
    assert usage.input_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0
    if response.status == "incomplete":
        assert usage.output_tokens == 16


async def test_cot_reasoning_item_whole_streamed_and_by_the_stream_helper(
    client: openai.AsyncOpenAI,
) -> None:
    whole = await client.responses.create(**COT)
    reasoning = reasoning_of(whole)
    assert reasoning
    assert whole.output_text
    assert whole.usage is not None
    assert 0 < whole.usage.output_tokens_details.reasoning_tokens < whole.usage.output_tokens

    reasoning_deltas: list[str] = []
    text_deltas: list[str] = []
    final = None
    stream = await client.responses.create(stream=True, **COT)
    async for event in stream:
        if event.type == "response.reasoning_text.delta":
            reasoning_deltas.append(event.delta)
        elif event.type == "response.output_text.delta":
            text_deltas.append(event.delta)
        elif event.type == "response.completed":
            final = event.response
    assert "".join(reasoning_deltas) == reasoning
    assert "".join(text_deltas) == whole.output_text
    assert final is not None
    assert final.output_text == whole.output_text
    assert final.usage == whole.usage

    # The SDK's helper accumulates the events into the same final response.
    seen: list[str] = []
    async with client.responses.stream(**COT) as helper:
        async for event in helper:
            seen.append(event.type)
        helped = await helper.get_final_response()
    assert seen[0] == "response.created" and seen[-1] == "response.completed"
    assert helped.output_text == whole.output_text
    assert reasoning_of(helped) == reasoning


async def test_majority_vote_through_responses(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(
        model=MODEL,
        input=QUESTION,
        max_output_tokens=32,
        temperature=0.8,
        extra_body={
            "seed": 3,
            "reasoning_strategy": "majority_vote",
            "reasoning_params": {"n": 3, "return_trace": True},
        },
    )
    assert response.output_text
    trace = (response.model_extra or {})["reasoning_trace"]
    assert trace["strategy"] == "majority_vote"
    assert len(trace["candidates"]) == 3
    assert response.output_text in [c["text"] for c in trace["candidates"]]
    usage = response.usage
    assert usage is not None
    # Every candidate's tokens are output; those not in the answer count as reasoning.
    drawn = [c["tokens"] for c in trace["candidates"]]
    assert usage.output_tokens == sum(drawn)
    chosen = next(c["tokens"] for c in trace["candidates"] if c["text"] == response.output_text)
    assert usage.output_tokens_details.reasoning_tokens == sum(drawn) - chosen


async def test_store_true_keeps_it_and_models_retrieve(client: openai.AsyncOpenAI) -> None:
    stored = await client.responses.create(
        model=MODEL, input=QUESTION, store=True, max_output_tokens=8
    )
    assert (await client.responses.retrieve(stored.id)).output_text == stored.output_text
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve("resp_never_made")
    assert (await client.models.retrieve(MODEL)).id == MODEL
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("no-such-model")


def the_call(response: Any) -> ResponseFunctionToolCall:
    """A response's one output item, checked to be a valid call of `get_weather`."""
    (item,) = response.output
    assert isinstance(item, ResponseFunctionToolCall)
    assert item.name == "get_weather" and item.status == "completed"
    arguments = json.loads(item.arguments)
    assert set(arguments) == {"city", "unit"} and isinstance(arguments["city"], str)
    assert arguments["unit"] in ("celsius", "fahrenheit")
    return item


async def test_a_forced_call_whole_streamed_and_answered_from_its_output(
    client: openai.AsyncOpenAI,
) -> None:
    # Forced, so the embedded grammar makes the call valid for its schema (the small model
    # calls reliably only then).
    fields: dict[str, Any] = {
        "model": MODEL,
        "input": WEATHER_QUESTION,
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_output_tokens": 64,
        "temperature": 0,
    }
    whole = await client.responses.create(**fields)
    assert whole.status == "completed"
    call = the_call(whole)
    assert call.call_id.startswith("call_")

    # The SDK's stream helper parses every event into its own types and accumulates them.
    kinds: list[str] = []
    async with client.responses.stream(**fields) as stream:
        async for event in stream:
            kinds.append(event.type)
        streamed = await stream.get_final_response()
    assert the_call(streamed).arguments == call.arguments  # greedy: the same call
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "response.function_call_arguments.delta" in kinds

    # The round trip: the call and its output go back as input items.
    history: list[Any] = [
        {"role": "user", "content": WEATHER_QUESTION},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 C, sunny"},
    ]
    answered = await client.responses.create(
        model=MODEL,
        input=history,
        tools=[WEATHER],
        max_output_tokens=16,
        temperature=0,
    )
    assert answered.status in ("completed", "incomplete")
    assert answered.output_text or any(i.type == "function_call" for i in answered.output)
    # The model read the call and its result: the prompt grew by both.
    assert whole.usage is not None and answered.usage is not None
    assert answered.usage.input_tokens > whole.usage.input_tokens + 10


async def test_logit_bias_is_honoured_as_vllms_responses_endpoint_does(
    client: openai.AsyncOpenAI,
) -> None:
    # vLLM 0.32's ResponsesRequest takes logit_bias into its sampling params; so does this one.
    # " banana" is one token of SmolLM2's vocabulary: id 21285.
    response = await client.responses.create(
        model=MODEL,
        input=QUESTION,
        max_output_tokens=4,
        temperature=0,
        extra_body={"logit_bias": {"21285": 100}},
    )
    assert response.output_text == " banana" * 4


async def test_a_background_vote_on_the_embedded_model_is_read_streamed_and_kept(
    client: openai.AsyncOpenAI,
) -> None:
    """The openai SDK's background calls against the embedded default: created at once,
    retrieved when done, its events streamed again from a number on, and continued."""
    created = await client.responses.create(
        model=MODEL,
        input="What is 2 + 3? Answer with the number.",
        max_output_tokens=24,
        background=True,
        extra_body={"reasoning_strategy": "majority_vote", "reasoning_params": {"n": 3}},
    )
    assert created.status in ("queued", "in_progress")
    done = created
    # Long enough for the embedded model on a loaded machine; it takes seconds alone.
    for _ in range(3000):
        done = await client.responses.retrieve(created.id)
        if done.status not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.1)
    assert done.status in ("completed", "incomplete")
    assert done.output_text and done.usage is not None and done.usage.output_tokens > 0
    replayed = [
        e async for e in await client.responses.retrieve(created.id, stream=True, starting_after=1)
    ]
    assert replayed[0].sequence_number == 2
    assert replayed[-1].type == "response.completed"
    assert replayed[-1].response.output_text == done.output_text
    follow = await client.responses.create(
        model=MODEL,
        input="And times two?",
        max_output_tokens=8,
        previous_response_id=created.id,
    )
    assert follow.status in ("completed", "incomplete")
