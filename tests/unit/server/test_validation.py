"""Request fields are strictly typed, as OpenAI's are: a wrong type is a 400 naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from backends.scripted import ScriptedBackend
from server.settings import Settings
from strategies.accounting import ModelPrice
from tests.factories import SCRIPTED_MODEL, app_client, chat_body


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"stream": "yes"}, "stream"),
        ({"stream": 1}, "stream"),
        ({"n": "2"}, "n"),
        ({"n": 2.5}, "n"),
        ({"n": True}, "n"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"max_completion_tokens": 10.0}, "max_completion_tokens"),
        ({"temperature": "0.5"}, "temperature"),
        ({"top_p": False}, "top_p"),
        ({"logprobs": 1}, "logprobs"),
        ({"logprobs": "true"}, "logprobs"),
        ({"seed": "7"}, "seed"),
        ({"stop": 5}, "stop"),
        (
            {"stream": True, "stream_options": {"include_usage": "true"}},
            "stream_options.include_usage",
        ),
        ({"reasoning_params": "n=4"}, "reasoning_params"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [{"role": "system", "content": None}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": 4}]}, "messages.0.content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 4}]}]},
            "messages.0.content.0.text",
        ),
    ],
)
async def test_a_field_of_the_wrong_type_is_a_400_naming_it(
    fields: dict[str, Any], param: str
) -> None:
    async with app_client(ScriptedBackend()) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(**fields))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        param,
        "invalid_value",
    )
    assert error["message"].startswith(f"{param}: ")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": "5"}, "max_tokens"),
        ({"echo": "false"}, "echo"),
        ({"logprobs": 1.0}, "logprobs"),
    ],
)
async def test_completions_fields_are_strict_too(fields: dict[str, Any], param: str) -> None:
    body = {"model": SCRIPTED_MODEL, "prompt": "2 + 2 =", **fields}
    async with app_client(ScriptedBackend()) as client:
        response = await client.post("/v1/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_integers_are_numbers_and_an_assistant_turn_may_go_without_content() -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant"},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    body = chat_body(messages=messages, temperature=1, top_p=1, stream=False, n=1)
    async with app_client(ScriptedBackend()) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"n": "4"}, "reasoning_params.n"),
        ({"n": 4.0}, "reasoning_params.n"),
        ({"return_trace": "yes"}, "reasoning_params.return_trace"),
        ({"temperature": "0.7"}, "reasoning_params.temperature"),
    ],
)
async def test_reasoning_params_are_strict(params: dict[str, Any], param: str) -> None:
    body = chat_body(reasoning_strategy="majority_vote", reasoning_params=params)
    async with app_client(ScriptedBackend()) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, "invalid_reasoning_params")


async def test_reasoning_params_take_json_as_json_gives_them() -> None:
    # An enum by its name, a float given as an integer.
    params = {"n": 2, "temperature": 1, "aggregation": "min", "verifier": "confidence"}
    body = chat_body(reasoning_strategy="best_of_n", reasoning_params=params)
    async with app_client(ScriptedBackend(["4", "5"])) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text


async def test_a_search_refuses_what_it_cannot_honour_before_any_call() -> None:
    backend = ScriptedBackend(["never sent"])
    async with app_client(backend) as client:
        confidence = await client.post(
            "/v1/chat/completions",
            json=chat_body(
                reasoning_strategy="beam_search", reasoning_params={"verifier": "confidence"}
            ),
        )
        two = await client.post(
            "/v1/chat/completions", json=chat_body(n=2, reasoning_strategy="beam_search")
        )
        logprobs = await client.post(
            "/v1/chat/completions", json=chat_body(logprobs=True, reasoning_strategy="dvts")
        )
    assert confidence.status_code == two.status_code == logprobs.status_code == 400
    assert confidence.json()["error"]["param"] == "reasoning_params"
    assert "llm_judge" in confidence.json()["error"]["message"]
    assert two.json()["error"]["param"] == "n"
    assert logprobs.json()["error"]["param"] == "logprobs"
    assert backend.calls == []


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        # `int` reads a superscript digit, and refuses thousands of digits: both were 500s.
        ({"logit_bias": {"²": 1}}, "logit_bias"),
        ({"logit_bias": {"9" * 5000: 1}}, "logit_bias"),
        # Dollars beyond any budget overflowed what they were converted to.
        (
            {"reasoning_strategy": "none", "reasoning_params": {"budget": {"usd": 1e300}}},
            "reasoning_params.budget.usd",
        ),
    ],
)
async def test_values_that_overflow_are_a_400_not_a_500(fields: dict[str, Any], param: str) -> None:
    settings = Settings(prices={SCRIPTED_MODEL: ModelPrice(prompt=1.0, completion=1.0)})
    async with app_client(ScriptedBackend(), settings=settings, raise_app_exceptions=False) as c:
        response = await c.post("/v1/chat/completions", json=chat_body(**fields))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_an_unknown_field_is_logged_quoted_never_verbatim(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A newline in a field name wrote a line of the client's into the log.
    forged = "x\n2026-01-01 00:00:00 ERROR forged line"
    async with app_client(ScriptedBackend(["4"])) as client:
        with caplog.at_level("WARNING", logger="server"):
            response = await client.post("/v1/chat/completions", json=chat_body(**{forged: 1}))
    assert response.status_code == 200
    (record,) = [r for r in caplog.records if "unknown request fields" in r.getMessage()]
    assert "\n" not in record.getMessage()
    assert repr(forged) in record.getMessage()
