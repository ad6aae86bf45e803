"""Structured output and the sampling fields on the real embedded model, through the openai SDK.

The grammar is enforced while decoding, so JSON is valid for its schema every time, sampled or
greedy, streamed or not; the model's words themselves are never asserted.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, Field

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e

ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Describe a famous scientist as JSON: name, age, field."}
]


class Scientist(BaseModel):
    name: str = Field(max_length=24)
    age: int
    field: Literal["physics", "chemistry", "biology", "mathematics"]
    alive: bool


def schema_format(model: type[BaseModel]) -> Any:
    schema = model.model_json_schema()
    schema["additionalProperties"] = False
    return {"type": "json_schema", "json_schema": {"name": model.__name__, "schema": schema}}


async def test_parse_gives_the_pydantic_model_on_every_sample(client: openai.AsyncOpenAI) -> None:
    # Sampled at temperature 1, so each of the samples takes its own path through the grammar.
    completion = await client.chat.completions.parse(
        model=MODEL,
        messages=ASK,
        response_format=Scientist,
        n=3,
        temperature=1.0,
        max_tokens=80,
    )
    assert len(completion.choices) == 3
    for choice in completion.choices:
        assert choice.finish_reason == "stop"
        assert isinstance(choice.message.parsed, Scientist)


async def test_streamed_json_schema_is_valid_json(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        response_format=schema_format(Scientist),
        max_tokens=80,
        temperature=0,
        stream=True,
    )
    text, finish = "", None
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert finish == "stop"
    Scientist.model_validate_json(text)


async def test_json_object_is_an_object(client: openai.AsyncOpenAI) -> None:
    response = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give me a JSON object with a cat's name and age."}],
        response_format={"type": "json_object"},
        max_tokens=150,
        temperature=0,
    )
    choice = response.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(json.loads(choice.message.content or ""), dict)


async def test_completions_take_response_format_too(client: openai.AsyncOpenAI) -> None:
    response = await client.completions.create(
        model=MODEL,
        prompt="A scientist, as JSON:",
        max_tokens=80,
        temperature=0,
        extra_body={"response_format": schema_format(Scientist)},
    )
    Scientist.model_validate_json(response.choices[0].text)


async def test_majority_vote_answers_with_valid_json(client: openai.AsyncOpenAI) -> None:
    response = await client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        response_format=schema_format(Scientist),
        max_tokens=80,
        temperature=1.0,
        extra_body={
            "reasoning_strategy": "majority_vote",
            "reasoning_params": {"n": 3, "return_trace": True},
        },
    )
    Scientist.model_validate_json(response.choices[0].message.content or "")
    trace: dict[str, Any] = response.model_extra["reasoning_trace"]  # type: ignore[index]
    answers = [c["answer"] for c in trace["candidates"]]
    # Every candidate's answer is its JSON in canonical form (keys sorted, no spaces, text as
    # it is: a sampled name may be "Naměcá", which must not turn into escapes).
    for candidate, answer in zip(trace["candidates"], answers, strict=True):
        assert answer == json.dumps(
            json.loads(candidate["text"]),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )


async def test_a_schema_the_grammar_cannot_take_is_a_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model=MODEL,
            messages=ASK,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "bad", "schema": {"type": "no-such-type"}},
            },
            max_tokens=8,
        )
    assert caught.value.body["param"] == "response_format"  # type: ignore[index]


async def greedy(
    client: openai.AsyncOpenAI, max_tokens: int = 10, **fields: Any
) -> tuple[str, str, list[str]]:
    response = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is 3 + 4?"}],
        max_tokens=max_tokens,
        temperature=0,
        logprobs=True,
        extra_body=fields,
    )
    choice = response.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    tokens = [t.token for t in choice.logprobs.content]
    return choice.message.content or "", choice.finish_reason, tokens


async def test_logit_bias_forces_a_token(client: openai.AsyncOpenAI) -> None:
    from tests.e2e.test_embedded import tokenizer

    (token,) = tokenizer()(" banana", add_special_tokens=False)["input_ids"]
    text, finish, _ = await greedy(client, logit_bias={str(token): 100})
    assert text == " banana" * 10 and finish == "length"


async def test_stop_token_ids_end_the_answer_without_their_text(
    client: openai.AsyncOpenAI,
) -> None:
    from tests.e2e.test_embedded import tokenizer

    text, _, tokens = await greedy(client)
    # The third token of the greedy answer stops it: two tokens of text, three counted.
    third = tokenizer().convert_tokens_to_ids(tokenizer().tokenize(text))[2]
    stopped, finish, stopped_tokens = await greedy(client, stop_token_ids=[third])
    assert finish == "stop"
    assert stopped == "".join(tokens[:2])
    assert len(stopped_tokens) == 3


async def test_top_k_1_samples_the_likeliest_token_every_time(client: openai.AsyncOpenAI) -> None:
    # At temperature 1, every chosen token is one of the likeliest only if top_k 1 left no
    # other. Tokens tied at the top in bf16 all stay (as in vLLM and transformers), so the test
    # compares each token's log-probability with the best, not the samples with each other.
    response = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is 3 + 4?"}],
        max_tokens=24,
        temperature=1.0,
        n=2,
        logprobs=True,
        top_logprobs=2,
        extra_body={"top_k": 1},
    )
    for choice in response.choices:
        assert choice.logprobs is not None and choice.logprobs.content
        for token in choice.logprobs.content:
            assert token.logprob == max(t.logprob for t in token.top_logprobs)


async def test_a_frequency_penalty_ends_a_forced_repetition(client: openai.AsyncOpenAI) -> None:
    from tests.e2e.test_embedded import tokenizer

    # A bias of 30 makes " banana" the greedy token every time; a frequency penalty of 2 takes
    # 2 more per occurrence, so within 24 tokens another token must overtake it. (Presence and
    # repetition penalties are checked exactly on the sampler, in tests/unit.)
    (token,) = tokenizer()(" banana", add_special_tokens=False)["input_ids"]
    forced, _, _ = await greedy(client, logit_bias={str(token): 30}, max_tokens=24)
    assert forced == " banana" * 24
    penalised, _, _ = await greedy(
        client, logit_bias={str(token): 30}, frequency_penalty=2.0, max_tokens=24
    )
    assert penalised.startswith(" banana") and penalised != forced


async def test_a_token_id_past_the_vocabulary_is_a_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await greedy(client, logit_bias={"999999": 1})
    assert caught.value.body["param"] == "logit_bias"  # type: ignore[index]
