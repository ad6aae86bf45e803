"""`response_format` and the sampling fields through the gateway to real vLLM: the JSON comes
from vLLM's own structured outputs, and the fields reach its sampler under the names it takes."""

from __future__ import annotations

import json

import openai
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, Field

from tests.vllm.conftest import GENERATOR


class Scientist(BaseModel):
    name: str = Field(max_length=24)
    age: int
    alive: bool


async def test_parse_gets_json_of_the_schema_from_vllm(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.parse(
        model=GENERATOR,
        messages=[{"role": "user", "content": "Describe a famous scientist as JSON."}],
        response_format=Scientist,
        n=2,
        temperature=0.7,
        seed=11,
        # A grammar admits any amount of whitespace, and at a high temperature this small model
        # sometimes spends its whole allowance on it; the room and the seed keep the test about
        # parsing, not about the model's luck.
        max_tokens=200,
    )
    for choice in completion.choices:
        assert choice.finish_reason == "stop"
        assert isinstance(choice.message.parsed, Scientist)


async def test_json_object_streamed_and_voted(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=GENERATOR,
        messages=[{"role": "user", "content": "A JSON object with a cat's name and age."}],
        response_format={"type": "json_object"},
        max_tokens=80,
        temperature=0,
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert isinstance(json.loads(text), dict)
    voted = await client.chat.completions.create(
        model=GENERATOR,
        messages=[{"role": "user", "content": "Describe a famous scientist as JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "Scientist", "schema": Scientist.model_json_schema()},
        },
        max_tokens=80,
        extra_body={"reasoning_strategy": "majority_vote", "reasoning_params": {"n": 3}},
    )
    Scientist.model_validate_json(voted.choices[0].message.content or "")


async def test_vllm_takes_the_sampling_fields(client: openai.AsyncOpenAI) -> None:
    question: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is 3 + 4?"}]
    # vLLM accepts them all; their effect is checked exactly on the embedded sampler. (Here
    # vLLM on the CPU gave two different first tokens even with top_k 1, likely a tie in the
    # bf16 logits, so agreement between samples proves nothing either way.)
    accepted = await client.chat.completions.create(
        model=GENERATOR,
        messages=question,
        max_tokens=8,
        temperature=1.5,
        frequency_penalty=0.5,
        extra_body={"top_k": 1, "min_p": 0.1, "repetition_penalty": 1.2},
    )
    assert accepted.choices[0].message.content
    # " banana" is one token of SmolLM2's vocabulary: id 21285.
    forced = await client.chat.completions.create(
        model=GENERATOR,
        messages=question,
        max_tokens=4,
        temperature=0,
        logit_bias={"21285": 100},
        presence_penalty=0.5,
        extra_body={"stop_token_ids": [2]},
    )
    assert forced.choices[0].message.content == " banana" * 4


async def test_vllm_takes_logit_bias_on_responses_too(client: openai.AsyncOpenAI) -> None:
    # vLLM's own Responses endpoint honours logit_bias; through the gateway it reaches vLLM too.
    forced = await client.responses.create(
        model=GENERATOR,
        input="What is 3 + 4?",
        max_output_tokens=4,
        temperature=0,
        extra_body={"logit_bias": {"21285": 100}},
    )
    assert forced.output_text == " banana" * 4
