"""`response_format` and the sampling fields through the gateway to vLLM, on the wire, with the
clients people use for structured output: the openai SDK's `parse`, LangChain's
`with_structured_output` and LiteLLM. The stand-in honours the constraint as vLLM does (its
answer is JSON of the schema) and records what the gateway sent it.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

from bench.vllm_standin.answers import SERVED_MODEL
from bench.vllm_standin.state import StandIn
from tests.factories import gateway_client, node_report

pytestmark = pytest.mark.e2e

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Who won in 1998?"}]


class Winner(BaseModel):
    team: str
    year: int
    margin: float


@pytest.fixture
async def client(standin_gateway: str, fresh: StandIn) -> AsyncIterator[openai.AsyncOpenAI]:
    async with gateway_client(standin_gateway) as c:
        yield c


def sent(standin: StandIn) -> list[dict[str, Any]]:
    return [r.body for r in standin.requests if r.path.startswith("/v1/")]


def winner_schema(strict: bool | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "Winner", "schema": Winner.model_json_schema()}
    if strict is not None:
        spec["strict"] = strict
    return {"type": "json_schema", "json_schema": spec}


async def test_parse_sends_the_schema_as_vllm_structured_outputs(
    client: openai.AsyncOpenAI, standin: StandIn
) -> None:
    completion = await client.chat.completions.parse(
        model=SERVED_MODEL, messages=QUESTION, response_format=Winner, max_tokens=50
    )
    assert completion.choices[0].message.parsed == Winner(team="7", year=7, margin=7.5)
    (body,) = sent(standin)
    # The SDK sends strict: true and a schema it tightened; vLLM gets the schema as its `json`.
    assert set(body["structured_outputs"]) == {"json"}
    assert body["structured_outputs"]["json"]["properties"].keys() == {"team", "year", "margin"}
    assert "response_format" not in body


async def test_json_object_and_streaming(client: openai.AsyncOpenAI, standin: StandIn) -> None:
    stream = await client.chat.completions.create(
        model=SERVED_MODEL,
        messages=QUESTION,
        response_format={"type": "json_object"},
        max_tokens=50,
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert json.loads(text) == {"answer": "7"}
    (body,) = sent(standin)
    assert body["structured_outputs"] == {"json_object": True} and body["stream"] is True


async def test_completions_send_it_too(client: openai.AsyncOpenAI, standin: StandIn) -> None:
    response = await client.completions.create(
        model=SERVED_MODEL,
        prompt="The winner:",
        max_tokens=50,
        extra_body={"response_format": winner_schema(strict=True)},
    )
    assert Winner.model_validate_json(response.choices[0].text).year == 7
    (body,) = sent(standin)
    assert body["structured_outputs"] == {"json": Winner.model_json_schema()}


async def test_sampling_fields_reach_vllm_as_it_names_them(
    client: openai.AsyncOpenAI, standin: StandIn
) -> None:
    await client.chat.completions.create(
        model=SERVED_MODEL,
        messages=QUESTION,
        max_tokens=50,
        frequency_penalty=0.5,
        presence_penalty=-0.5,
        logit_bias={"42": 3},
        extra_body={
            "top_k": 5,
            "min_p": 0.05,
            "repetition_penalty": 1.1,
            "stop_token_ids": [2],
        },
    )
    (body,) = sent(standin)
    assert {k: body[k] for k in body if k not in {"model", "messages", "return_token_ids"}} == {
        "n": 1,
        "max_tokens": 50,
        "temperature": 1.0,
        "top_p": 1.0,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "logit_bias": {"42": 3.0},
        "top_k": 5,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "stop_token_ids": [2],
    }


async def test_voting_sends_the_constraint_with_every_candidate(
    client: openai.AsyncOpenAI, standin: StandIn
) -> None:
    response = await client.chat.completions.create(
        model=SERVED_MODEL,
        messages=QUESTION,
        max_tokens=50,
        extra_body={
            "response_format": winner_schema(),
            "reasoning_strategy": "majority_vote",
            "reasoning_params": {"n": 3},
        },
    )
    Winner.model_validate_json(response.choices[0].message.content or "")
    (body,) = sent(standin)
    assert body["n"] == 3 and "json" in body["structured_outputs"]


async def test_a_search_is_refused_before_any_call(
    client: openai.AsyncOpenAI, standin: StandIn
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model=SERVED_MODEL,
            messages=QUESTION,
            response_format={"type": "json_object"},
            extra_body={"reasoning_strategy": "beam_search"},
        )
    assert caught.value.body["param"] == "response_format"  # type: ignore[index]
    assert sent(standin) == []


async def test_langchain_with_structured_output(standin_gateway: str, fresh: StandIn) -> None:
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    model = ChatOpenAI(
        model=SERVED_MODEL,
        base_url=f"{standin_gateway}/v1",
        api_key=SecretStr("x"),
        max_retries=0,
        max_completion_tokens=50,
    )
    structured = model.with_structured_output(Winner, method="json_schema")
    answer = await structured.ainvoke("Who won in 1998?")
    assert answer == Winner(team="7", year=7, margin=7.5)
    (body,) = sent(fresh)
    assert "json" in body["structured_outputs"]


async def test_litellm_response_format(
    standin_gateway: str, fresh: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Offline: LiteLLM fetches its model cost map at import unless told to read its own copy.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("LITELLM_TELEMETRY", "False")
    import litellm

    response = await litellm.acompletion(
        model=f"openai/{SERVED_MODEL}",
        api_base=f"{standin_gateway}/v1",
        api_key="x",
        messages=[{"role": "user", "content": "Who won in 1998?"}],
        response_format=Winner,
        max_tokens=50,
    )
    content = response.choices[0].message.content
    assert Winner.model_validate_json(content).margin == 7.5
    (body,) = sent(fresh)
    assert "json" in body["structured_outputs"]
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"


async def test_ai_sdk_generate_object_with_a_zod_schema(
    standin_gateway: str, fresh: StandIn
) -> None:
    # The Vercel AI SDK, validating with zod itself.
    report = node_report("structured.mjs", standin_gateway, SERVED_MODEL)
    # The stand-in writes the schema's first enum value and 7s, as a grammar would let it.
    assert report == {
        "object": {
            "team": "7",
            "year": 7,
            "margin": 7.5,
            "scorers": ["7"],
            "venue": "home",
        },
        "valid": True,
        "finish": "stop",
        "output_tokens": report["output_tokens"],
    }
    assert report["output_tokens"] > 0
    (body,) = sent(fresh)
    assert body["n"] == 3  # majority_vote's candidates, from the SDK's providerOptions
    # zod's schema, as the SDK turned it into JSON schema, reached vLLM as its constraint.
    schema = body["structured_outputs"]["json"]
    assert schema["properties"].keys() == {"team", "year", "margin", "scorers", "venue"}
    assert schema["properties"]["venue"]["enum"] == ["home", "away", "neutral"]
    assert set(schema["required"]) == {"team", "year", "margin", "scorers", "venue"}
