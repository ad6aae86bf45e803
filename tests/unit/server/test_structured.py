"""`response_format` and the sampling fields at the HTTP edge: what reaches the backend, and the
400 that names each field a request gets wrong."""

from __future__ import annotations

from typing import Any

import pytest

from backends.base import SamplingParams, StructuredOutput
from backends.scripted import ScriptedBackend
from tests.factories import app_client, chat_body

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


async def sent(fields: dict[str, Any], path: str = "/v1/chat/completions") -> SamplingParams:
    backend = ScriptedBackend(['{"a": 1}'])
    async with app_client(backend) as client:
        body = chat_body(**fields)
        if path == "/v1/completions":
            body = {"model": body["model"], "prompt": "Say it", **fields}
        response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    return backend.sampled[0]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_response_format_reaches_the_backend(path: str) -> None:
    json_schema = {"name": "thing", "schema": SCHEMA, "strict": True}
    params = await sent({"response_format": {"type": "json_schema", "json_schema": json_schema}})
    assert params.structured == StructuredOutput(SCHEMA)
    params = await sent({"response_format": {"type": "json_object"}}, path)
    assert params.structured == StructuredOutput()
    params = await sent({"response_format": {"type": "text"}}, path)
    assert params.structured is None


async def test_sampling_fields_reach_the_backend() -> None:
    params = await sent(
        {
            "frequency_penalty": 0.5,
            "presence_penalty": -0.25,
            "logit_bias": {"42": 5, "7": -100},
            "top_k": 20,
            "min_p": 0.1,
            "repetition_penalty": 1.2,
            "stop_token_ids": [2, 0],
        }
    )
    assert params.frequency_penalty == 0.5
    assert params.presence_penalty == -0.25
    assert params.logit_bias == ((42, 5.0), (7, -100.0))
    assert params.top_k == 20
    assert params.min_p == 0.1
    assert params.repetition_penalty == 1.2
    assert params.stop_token_ids == (2, 0)


async def test_neutral_sampling_fields_are_the_defaults() -> None:
    params = await sent({"top_k": -1, "frequency_penalty": 0, "logit_bias": {}})
    assert params == SamplingParams(max_tokens=params.max_tokens)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}}},
            "response_format.json_schema.name",
        ),
        ({"logit_bias": {"hello": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"top_k": -2}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
        ({"stop_token_ids": ["2"]}, "stop_token_ids.0"),
    ],
)
async def test_bad_fields_are_400_naming_them(fields: dict[str, Any], param: str) -> None:
    async with app_client(ScriptedBackend()) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(**fields))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize("strategy", ["beam_search", "dvts", "mcts"])
async def test_searches_refuse_response_format_naming_the_strategies_that_take_it(
    strategy: str,
) -> None:
    backend = ScriptedBackend()
    body = chat_body(response_format={"type": "json_object"}, reasoning_strategy=strategy)
    async with app_client(backend) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "response_format"
    assert "majority_vote" in error["message"]
    assert backend.calls == []
