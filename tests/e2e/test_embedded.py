"""The real openai client against a real gateway serving the real embedded model.

Greedy decoding (temperature 0) makes answers repeatable, so streamed and non-streamed answers
can be compared exactly; the model's words themselves are never asserted.
"""

from __future__ import annotations

import asyncio
import time
from functools import cache
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.conftest import MAX_N, MAX_TOKENS, MODEL

pytestmark = pytest.mark.e2e

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is 3 + 4?"}]


@cache
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from backends.smollm2 import converted_model_dir

    return AutoTokenizer.from_pretrained(converted_model_dir())


async def test_models_list_the_embedded_model(client: openai.AsyncOpenAI) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == [MODEL]


async def test_chat_text_from_smollm2_with_exact_usage(client: openai.AsyncOpenAI) -> None:
    response = await client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=12, temperature=0, logprobs=True
    )
    choice = response.choices[0]
    assert choice.message.content
    assert choice.logprobs is not None and choice.logprobs.content is not None
    usage = response.usage
    assert usage is not None
    # Every generated token carries one logprob entry, so the count is checkable exactly.
    assert usage.completion_tokens == len(choice.logprobs.content)
    if choice.finish_reason == "length":
        assert usage.completion_tokens == 12
    rendered = tokenizer().apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert usage.prompt_tokens == len(tokenizer()(rendered, add_special_tokens=False)["input_ids"])
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0


async def test_n_samples_count_every_token(client: openai.AsyncOpenAI) -> None:
    response = await client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=10, temperature=0.8, n=4, seed=7, logprobs=True
    )
    assert [c.index for c in response.choices] == [0, 1, 2, 3]
    counted = sum(len(c.logprobs.content or []) for c in response.choices if c.logprobs)
    assert response.usage is not None
    assert response.usage.completion_tokens == counted


async def test_seed_makes_sampling_repeatable(client: openai.AsyncOpenAI) -> None:
    async def sample() -> str | None:
        response = await client.chat.completions.create(
            model=MODEL, messages=QUESTION, max_tokens=10, temperature=1.0, seed=42
        )
        return response.choices[0].message.content

    assert await sample() == await sample()


async def test_completions_endpoint(client: openai.AsyncOpenAI) -> None:
    response = await client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0, logprobs=2
    )
    choice = response.choices[0]
    assert choice.text
    assert choice.logprobs is not None and choice.logprobs.tokens is not None
    assert response.usage is not None
    assert response.usage.completion_tokens == len(choice.logprobs.tokens)
    assert "".join(choice.logprobs.tokens) == choice.text or choice.finish_reason == "stop"


async def test_stop_string_ends_the_answer(client: openai.AsyncOpenAI) -> None:
    free = await client.completions.create(
        model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0
    )
    text = free.choices[0].text
    assert "," in text, "the model should continue the list"
    cut = await client.completions.create(
        model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[","]
    )
    assert cut.choices[0].text == text.split(",")[0]
    assert cut.choices[0].finish_reason == "stop"


async def test_stream_matches_the_whole_answer_and_reports_usage(
    client: openai.AsyncOpenAI,
) -> None:
    whole = await client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=24, temperature=0
    )
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    usage = None
    finish = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens


async def test_stream_is_token_by_token(client: openai.AsyncOpenAI) -> None:
    # Not a speed target: the first text must arrive long before the last one is generated,
    # which a stream buffered until the end could not do.
    started = time.monotonic()
    arrivals: list[float] = []
    stream = await client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=48, temperature=0, stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    total = time.monotonic() - started
    assert len(arrivals) > 5
    assert arrivals[-1] - arrivals[0] > 0.5 * total


async def test_cot_through_extra_body(client: openai.AsyncOpenAI) -> None:
    response = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=64,
        temperature=0,
        extra_body={"reasoning_strategy": "cot"},
    )
    message = response.choices[0].message
    reasoning = (message.model_extra or {}).get("reasoning")
    assert message.content
    assert reasoning
    assert (message.model_extra or {}).get("reasoning_content") == reasoning
    assert response.usage is not None and response.usage.completion_tokens_details is not None
    reasoning_tokens = response.usage.completion_tokens_details.reasoning_tokens
    assert reasoning_tokens is not None
    assert 0 < reasoning_tokens < response.usage.completion_tokens


async def test_cot_stream_streams_reasoning_then_answer(client: openai.AsyncOpenAI) -> None:
    fields: dict[str, Any] = {
        "model": MODEL,
        "messages": QUESTION,
        "max_tokens": 64,
        "temperature": 0,
        "extra_body": {"reasoning_strategy": "cot"},
    }
    whole = await client.chat.completions.create(**fields)
    reasoning: list[str] = []
    reasoning_content: list[str] = []
    content: list[str] = []
    stream = await client.chat.completions.create(stream=True, **fields)
    async for chunk in stream:
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            reasoning.append(extra.get("reasoning") or "")
            reasoning_content.append(extra.get("reasoning_content") or "")
            content.append(choice.delta.content or "")
    assert "".join(reasoning) == (whole.choices[0].message.model_extra or {}).get("reasoning")
    assert reasoning_content == reasoning
    assert "".join(content) == whole.choices[0].message.content


async def test_health_answers_while_the_model_generates(
    client: openai.AsyncOpenAI, gateway_url: str
) -> None:
    generation = asyncio.create_task(
        client.chat.completions.create(
            model=MODEL, messages=QUESTION, max_tokens=120, temperature=0
        )
    )
    await asyncio.sleep(0.3)
    async with httpx.AsyncClient() as http:
        health = await http.get(f"{gateway_url}/health")
        ready = await http.get(f"{gateway_url}/ready")
    assert health.status_code == 200 and ready.status_code == 200
    assert not generation.done(), "health should answer before a long generation finishes"
    await generation


async def test_concurrent_requests_are_all_answered(client: openai.AsyncOpenAI) -> None:
    responses = await asyncio.gather(
        *(
            client.chat.completions.create(
                model=MODEL, messages=QUESTION, max_tokens=6, temperature=0
            )
            for _ in range(6)
        )
    )
    contents = {r.choices[0].message.content for r in responses}
    assert len(contents) == 1 and contents != {""}


async def test_unknown_strategy_is_400_listing_names(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model=MODEL, messages=QUESTION, extra_body={"reasoning_strategy": "magic"}
        )
    error = info.value.body
    assert isinstance(error, dict)
    assert error["param"] == "reasoning_strategy"
    assert "cot" in error["message"] and "none" in error["message"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 3.0}, "temperature"),
        ({"n": MAX_N + 1}, "n"),
        ({"max_tokens": MAX_TOKENS + 1}, "max_tokens"),
        (
            {"extra_body": {"reasoning_strategy": "cot", "reasoning_params": {"answer_marker": 5}}},
            "reasoning_params.answer_marker",
        ),
    ],
)
async def test_bad_requests_are_400(
    client: openai.AsyncOpenAI, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=MODEL, messages=QUESTION, **fields)
    assert isinstance(info.value.body, dict)
    assert info.value.body["param"] == param


async def test_unknown_model_is_404(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="gpt-5", messages=QUESTION)


async def test_prompt_over_the_context_is_400(client: openai.AsyncOpenAI) -> None:
    long_prompt = "word " * 9000
    with pytest.raises(openai.BadRequestError) as info:
        await client.completions.create(model=MODEL, prompt=long_prompt, max_tokens=4)
    assert "context length" in str(info.value)
