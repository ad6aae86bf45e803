"""Function calling through the gateway on the scripted backend, driven by the openai SDK:
calls passed through (`none`, `cot`), streamed, voted on, and the 400s for what cannot be."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import openai
import pytest

from backends.base import ChatPrompt, ForcedTool, Prompt, SamplingParams
from backends.scripted import ScriptedBackend
from tests.factories import (
    SCRIPTED_MODEL,
    TIME,
    WEATHER,
    app_client,
    chat_body,
    tool_call_text,
)

call = tool_call_text


async def test_a_call_comes_back_in_openais_shape(
    client: openai.AsyncOpenAI, backend: ScriptedBackend
) -> None:
    response = await client.chat.completions.create(
        model=SCRIPTED_MODEL,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER, TIME],
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    (made,) = choice.message.tool_calls
    assert made.type == "function" and made.id.startswith("call_")
    assert made.function.name == "get_weather"
    assert json.loads(made.function.arguments) == {"city": "Paris"}
    # The backend got the tools with the prompt, the choice defaulting to auto.
    prompt = backend.calls[0].prompt
    assert isinstance(prompt, ChatPrompt) and prompt.tools is not None
    assert [t.name for t in prompt.tools.functions] == ["get_weather", "get_time"]
    assert prompt.tools.choice == "auto" and prompt.tools.parallel


async def test_text_answers_stay_text_and_have_no_tool_calls_field(
    backend: ScriptedBackend,
) -> None:
    async with app_client(ScriptedBackend(["It is sunny."])) as http:
        response = await http.post("/v1/chat/completions", json=chat_body(tools=[WEATHER]))
    message = response.json()["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": "It is sunny.",
        "reasoning": None,
        "reasoning_content": None,
    }
    assert response.json()["choices"][0]["finish_reason"] == "stop"


async def test_a_round_trip_carries_the_calls_and_results_to_the_backend(
    backend: ScriptedBackend, client: openai.AsyncOpenAI
) -> None:
    await client.chat.completions.create(
        model=SCRIPTED_MODEL,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_9", "content": "18 C"},
        ],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    prompt = backend.calls[0].prompt
    assert isinstance(prompt, ChatPrompt) and prompt.tools is not None
    _, assistant, tool = prompt.messages
    assert assistant.role == "assistant" and assistant.content == ""
    assert [(c.id, c.name, c.arguments) for c in assistant.tool_calls] == [
        ("call_9", "get_weather", '{"city":"Paris"}')
    ]
    assert (tool.role, tool.content, tool.tool_call_id) == ("tool", "18 C", "call_9")
    # Answering the calls' results is a new turn, not a continuation of the assistant's.
    assert not prompt.continue_final_message
    assert prompt.tools.choice == ForcedTool("get_weather") and not prompt.tools.parallel


@pytest.mark.parametrize("strategy", ["none", "cot"])
async def test_streamed_calls_arrive_as_openai_deltas(
    client: openai.AsyncOpenAI, strategy: str
) -> None:
    stream = await client.chat.completions.create(
        model=SCRIPTED_MODEL,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required",
        stream=True,
        extra_body={"reasoning_strategy": strategy},
    )
    pieces: list[Any] = []
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            pieces += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    first, *rest = pieces
    assert first.index == 0 and first.id is not None and first.type == "function"
    assert first.function is not None and first.function.name == "get_weather"
    # Later pieces carry only arguments, which add up to the call's JSON.
    assert all(p.id is None and p.function.name is None for p in rest)
    arguments = "".join(p.function.arguments or "" for p in pieces if p.function)
    assert json.loads(arguments) == {"city": "Paris"}


def votes(texts: Iterable[str]) -> ScriptedBackend:
    return ScriptedBackend(list(texts))


CANDIDATES = [
    call("get_weather", {"city": "Rome"}),
    call("get_weather", '{"days": 2.0, "city": "Paris"}'),
    "It is sunny everywhere.",
    call("get_weather", '{"city": "Paris", "days": 2}'),
    call("get_time", {}),
]


async def test_majority_vote_counts_equal_calls_together() -> None:
    backend = votes(CANDIDATES)
    body = chat_body(
        tools=[WEATHER, TIME],
        reasoning_strategy="majority_vote",
        reasoning_params={"n": 5, "return_trace": True},
    )
    async with app_client(backend) as http:
        response = await http.post("/v1/chat/completions", json=body)
    data = response.json()
    (choice,) = data["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (made,) = choice["message"]["tool_calls"]
    # The first of the winning group, with a fresh id.
    assert made["function"] == {
        "name": "get_weather",
        "arguments": '{"days": 2.0, "city": "Paris"}',
    }
    assert made["id"].startswith("call_")
    trace = data["reasoning_trace"]
    assert (
        trace["votes"]
        == {
            'get_weather({"city":"Paris","days":2})': 2.0,
            'get_weather({"city":"Rome"})': 1.0,
            "get_time({})": 1.0,
            "sunny everywhere.": 1.0,
        }
        or trace["votes"]['get_weather({"city":"Paris","days":2})'] == 2.0
    )
    assert trace["answer"] == 'get_weather({"city":"Paris","days":2})'
    assert trace["candidates"][0]["tool_calls"] == [
        {"name": "get_weather", "arguments": '{"city": "Rome"}'}
    ]
    assert "tool_calls" not in trace["candidates"][2]


async def test_a_text_answer_can_win_the_vote_over_calls() -> None:
    backend = votes(["It is 4.", call("get_time", {}), "so 4"])
    body = chat_body(tools=[TIME], reasoning_strategy="majority_vote", reasoning_params={"n": 3})
    async with app_client(backend) as http:
        response = await http.post("/v1/chat/completions", json=body)
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == "It is 4." and "tool_calls" not in choice["message"]


async def test_voted_calls_stream_in_one_piece_each() -> None:
    backend = votes([call("get_time", {}), call("get_time", {})])
    body = chat_body(
        tools=[TIME], reasoning_strategy="majority_vote", reasoning_params={"n": 2}, stream=True
    )
    async with app_client(backend) as http:
        response = await http.post("/v1/chat/completions", json=body)
    chunks = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")
    ]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    pieces = [p for d in deltas for p in d.get("tool_calls", [])]
    assert [(p["index"], p["type"], p["function"]) for p in pieces] == [
        (0, "function", {"name": "get_time", "arguments": "{}"})
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("strategy", ["beam_search", "dvts", "mcts"])
async def test_searches_refuse_tools_naming_those_that_take_them(strategy: str) -> None:
    backend = ScriptedBackend()
    body = chat_body(tools=[TIME], reasoning_strategy=strategy)
    async with app_client(backend) as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "tools"
    assert strategy in error["message"]
    assert "none, cot, majority_vote, weighted_vote, best_of_n" in error["message"]
    assert backend.calls == []


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": []}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [TIME], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tools": [TIME, TIME]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools."),
        ({"tools": [TIME], "tool_choice": "sometimes"}, "tool_choice"),
    ],
)
async def test_bad_tools_are_400_naming_the_field(fields: dict[str, Any], param: str) -> None:
    backend = ScriptedBackend()
    async with app_client(backend) as http:
        response = await http.post("/v1/chat/completions", json=chat_body(**fields))
    assert response.status_code == 400
    error = response.json()["error"]
    # A trailing dot: the param is somewhere inside that field.
    assert error["param"] == param if not param.endswith(".") else error["param"].startswith(param)
    assert backend.calls == []


async def test_a_tool_message_needs_its_call_id() -> None:
    body = chat_body()
    body["messages"] += [{"role": "tool", "content": "18 C"}]
    async with app_client(ScriptedBackend()) as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages.1.tool_call_id"


def _forced(prompt: Prompt, params: SamplingParams) -> Iterable[str]:
    return ['{"city": "Oslo"}'] * params.n


async def test_a_named_choice_ends_with_stop_as_openais_does() -> None:
    body = chat_body(
        tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    async with app_client(ScriptedBackend(_forced)) as http:
        response = await http.post("/v1/chat/completions", json=body)
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Oslo"}',
    }
