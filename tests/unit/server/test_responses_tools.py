"""Function tools on `POST /v1/responses` against the scripted backend: flat tools and the
input items of a round trip mapped to the chat history the backends take, `function_call`
output items whole and as the typed events the openai SDK parses, votes over calls, and the
400s for what cannot be."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.responses import Response

from backends.base import ChatMessage, ChatPrompt, ForcedTool, ToolCall, ToolCallDelta
from backends.scripted import ScriptedBackend
from server.serving.responses import ResponsesRendering
from strategies.base import ChoiceDelta
from tests import factories
from tests.factories import SCRIPTED_MODEL, flat_tool, tool_call_text
from tests.unit.server.test_responses import EVENTS, named_events, post, responses_body

# The chat tests' tools, flat.
WEATHER = flat_tool(factories.WEATHER, strict=False)
TIME = flat_tool(factories.TIME)


call = tool_call_text


async def test_a_call_is_a_function_call_item_and_the_tools_reach_the_backend(
    client: openai.AsyncOpenAI, backend: ScriptedBackend
) -> None:
    response = await client.responses.create(
        model=SCRIPTED_MODEL, input="Weather in Paris?", tools=[WEATHER, TIME]
    )
    assert response.status == "completed"
    (item,) = response.output  # no message item: the model wrote nothing but the call
    assert item.type == "function_call"
    assert item.id is not None and item.id.startswith("fc_")
    assert item.call_id.startswith("call_") and item.status == "completed"
    assert (item.name, json.loads(item.arguments)) == ("get_weather", {"city": "Paris"})
    assert response.output_text == ""
    # The tools come back as they were sent, the choice defaulting to auto.
    assert [tool.model_dump(exclude_none=True) for tool in response.tools] == [
        {k: v for k, v in WEATHER.items() if v is not None},
        {k: v for k, v in TIME.items() if v is not None},
    ]
    assert response.tool_choice == "auto"

    prompt = backend.calls[0].prompt
    assert isinstance(prompt, ChatPrompt) and prompt.tools is not None
    weather, time = prompt.tools.functions
    assert (weather.name, weather.description, weather.parameters, weather.strict) == (
        "get_weather",
        "The weather in a city",
        WEATHER["parameters"],
        False,
    )
    assert (time.name, time.parameters) == ("get_time", {})
    assert prompt.tools.choice == "auto" and prompt.tools.parallel


async def test_text_beside_a_call_is_a_message_item_before_it() -> None:
    backend = ScriptedBackend(["Let me look. " + call("get_time", {})])
    whole = (await post(backend, responses_body(tools=[TIME]))).json()
    parsed = Response.model_validate(whole)
    assert [item.type for item in parsed.output] == ["message", "function_call"]
    assert parsed.output_text.strip() == "Let me look."


async def test_a_round_trip_becomes_assistant_calls_and_tool_turns(
    client: openai.AsyncOpenAI, backend: ScriptedBackend
) -> None:
    await client.responses.create(
        model=SCRIPTED_MODEL,
        input=[
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": "Two cities."}],
            },
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
                "status": "completed",
            },
            {
                "type": "function_call",
                "call_id": "call_2",
                "name": "get_weather",
                "arguments": '{"city":"Rome"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "18 C"},
            {
                "type": "function_call_output",
                "call_id": "call_2",
                "output": [{"type": "input_text", "text": "21 C"}],
            },
        ],
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
    )
    prompt = backend.calls[0].prompt
    assert isinstance(prompt, ChatPrompt) and prompt.tools is not None
    # One assistant turn holds both calls (and the reasoning before them), as chat has it.
    assert prompt.messages == (
        ChatMessage("user", "Weather in Paris and Rome?"),
        ChatMessage(
            "assistant",
            "",
            tool_calls=(
                ToolCall("call_1", "get_weather", '{"city":"Paris"}'),
                ToolCall("call_2", "get_weather", '{"city":"Rome"}'),
            ),
            reasoning="Two cities.",
        ),
        ChatMessage("tool", "18 C", tool_call_id="call_1"),
        ChatMessage("tool", "21 C", tool_call_id="call_2"),
    )
    assert not prompt.continue_final_message
    assert prompt.tools.choice == ForcedTool("get_weather") and not prompt.tools.parallel


async def test_a_call_after_an_assistant_message_joins_its_turn() -> None:
    backend = ScriptedBackend(["ok"])
    items = [
        {"role": "user", "content": "Time?"},
        {"type": "message", "role": "assistant", "content": "Checking."},
        {"type": "function_call", "call_id": "c1", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "noon"},
    ]
    assert (await post(backend, responses_body(items, tools=[TIME]))).status_code == 200
    prompt = backend.calls[0].prompt
    assert isinstance(prompt, ChatPrompt)
    assert prompt.messages[1] == ChatMessage(
        "assistant", "Checking.", tool_calls=(ToolCall("c1", "get_time", "{}"),)
    )


@pytest.mark.parametrize("strategy", ["none", "cot"])
async def test_a_streamed_call_is_typed_events_the_sdk_knows(strategy: str) -> None:
    backend = ScriptedBackend([call("get_weather", {"city": "Paris", "days": 2})])
    body = responses_body(
        tools=[WEATHER], tool_choice="required", stream=True, reasoning_strategy=strategy
    )
    events = named_events((await post(backend, body)).text)
    for name, data in events:
        assert name == data["type"]
        EVENTS.validate_python(data)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    kinds = [name for name, _ in events]
    deltas = kinds.count("response.function_call_arguments.delta")
    assert deltas == 2  # the scripted backend streams the arguments in two pieces
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * deltas,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = events[2][1]["item"]
    assert added["type"] == "function_call" and added["status"] == "in_progress"
    assert (added["name"], added["arguments"]) == ("get_weather", "")
    pieces = [data["delta"] for name, data in events if name.endswith("arguments.delta")]
    done = events[-3][1]
    assert done["arguments"] == "".join(pieces) and done["name"] == "get_weather"
    assert json.loads(done["arguments"]) == {"city": "Paris", "days": 2}
    item = events[-2][1]["item"]
    assert (item["id"], item["call_id"]) == (added["id"], added["call_id"])
    assert item["status"] == "completed" and item["arguments"] == done["arguments"]
    final = Response.model_validate(events[-1][1]["response"])
    assert final.status == "completed"
    assert [i.model_dump(exclude_none=True) for i in final.output] == [item]
    assert final.tool_choice == "required"


async def test_the_sdk_stream_helper_accumulates_the_call(client: openai.AsyncOpenAI) -> None:
    async with client.responses.stream(
        model=SCRIPTED_MODEL, input="Weather?", tools=[WEATHER], tool_choice="required"
    ) as stream:
        arguments: list[str] = []
        async for event in stream:
            if event.type == "response.function_call_arguments.delta":
                arguments.append(event.delta)
        final = await stream.get_final_response()
    (item,) = final.output
    assert item.type == "function_call" and item.arguments == "".join(arguments)
    assert json.loads(item.arguments) == {"city": "Paris"}


async def test_a_vote_over_calls_answers_with_the_winning_call() -> None:
    backend = ScriptedBackend(
        [
            call("get_weather", {"city": "Rome"}),
            call("get_weather", {"city": "Paris"}),
            call("get_weather", {"city": "Paris"}),
        ]
    )
    body = responses_body(
        tools=[WEATHER],
        reasoning_strategy="majority_vote",
        reasoning_params={"n": 3, "return_trace": True},
    )
    whole = (await post(backend, body)).json()
    (item,) = Response.model_validate(whole).output
    assert item.type == "function_call" and json.loads(item.arguments) == {"city": "Paris"}
    assert whole["reasoning_trace"]["votes"]['get_weather({"city":"Paris"})'] == 2.0
    # Streamed, a vote's winning call arrives whole: one arguments delta.
    events = named_events((await post(backend, body | {"stream": True})).text)
    for _, data in events:
        EVENTS.validate_python(data)
    kinds = [name for name, _ in events]
    assert kinds.count("response.function_call_arguments.delta") == 1
    final = Response.model_validate(events[-1][1]["response"])
    (streamed,) = final.output
    assert streamed.type == "function_call" and streamed.arguments == item.arguments


async def test_tools_empty_or_choice_none_or_auto_without_tools_are_served() -> None:
    backend = ScriptedBackend(["4", "4", "4"])
    served: list[dict[str, Any]] = [{"tools": []}, {"tool_choice": "auto"}, {"tool_choice": "none"}]
    for fields in served:
        response = await post(backend, responses_body(**fields))
        assert response.status_code == 200, response.text
    assert all(isinstance(c.prompt, ChatPrompt) and c.prompt.tools is None for c in backend.calls)


@pytest.mark.parametrize("strategy", ["beam_search", "dvts", "mcts"])
async def test_searches_refuse_tools_naming_those_that_take_them(strategy: str) -> None:
    backend = ScriptedBackend()
    response = await post(backend, responses_body(tools=[TIME], reasoning_strategy=strategy))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "tools"
    assert "none, cot, majority_vote, weighted_vote, best_of_n" in error["message"]
    assert backend.calls == []


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"tools": [{"type": "function", "parameters": {}}]}, "tools.0.name"),
        ({"tools": [{"type": "function", "name": "a b"}]}, "tools.0.name"),
        ({"tools": [TIME, TIME]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "name": "get_time"}}, "tool_choice"),
        ({"tools": [TIME], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"tools": [TIME], "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"input": [{"type": "function_call_output", "output": "x"}]},
            "input.0.call_id",
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "c"}]},
            "input.0.output",
        ),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_image", "image_url": "data:,"}],
                    }
                ]
            },
            "input.0.output.0",
        ),
        (
            {"input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]},
            "input.0.name",
        ),
        ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input.0"),
    ],
)
async def test_what_cannot_be_called_is_400_naming_the_field(
    fields: dict[str, Any], param: str
) -> None:
    backend = ScriptedBackend()
    response = await post(backend, responses_body() | fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["type"]) == (param, "invalid_request_error")
    assert backend.calls == []


def test_pieces_of_two_calls_are_two_items_even_when_each_piece_repeats_its_id() -> None:
    rendering = ResponsesRendering("resp_1", SCRIPTED_MODEL, False, {}, 64)
    pieces = [
        ToolCallDelta(0, "call_a", "get_time", ""),
        ToolCallDelta(0, arguments="{}"),
        # Some servers repeat the id (and name) in every piece of a call.
        ToolCallDelta(1, "call_b", "get_weather", '{"city": '),
        ToolCallDelta(1, "call_b", "get_weather", '"Paris"}'),
    ]
    sent = rendering.sse_delta(ChoiceDelta(0, tool_calls=tuple(pieces)))
    sent += rendering.sse_finish(0, "tool_calls")
    events = named_events("".join(sent))
    for _, data in events:
        EVENTS.validate_python(data)
    items = [data["item"] for name, data in events if name == "response.output_item.done"]
    assert [(i["call_id"], i["name"], i["arguments"]) for i in items] == [
        ("call_a", "get_time", "{}"),
        ("call_b", "get_weather", '{"city": "Paris"}'),
    ]
    added = [data["output_index"] for name, data in events if name == "response.output_item.added"]
    assert added == [0, 1]


async def test_output_items_go_back_as_input_as_the_sdk_returned_them(
    client: openai.AsyncOpenAI, backend: ScriptedBackend
) -> None:
    # OpenAI's documented loop: append `response.output` to the input, then the results.
    asked = await client.responses.create(model=SCRIPTED_MODEL, input="Weather?", tools=[WEATHER])
    (call,) = asked.output
    assert call.type == "function_call"
    history: list[Any] = [{"role": "user", "content": "Weather?"}, *asked.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "18 C"})
    await client.responses.create(model=SCRIPTED_MODEL, input=history, tools=[WEATHER])
    prompt = backend.calls[1].prompt
    assert isinstance(prompt, ChatPrompt)
    assert [(m.role, m.tool_calls, m.tool_call_id) for m in prompt.messages[1:]] == [
        ("assistant", (ToolCall(call.call_id, "get_weather", call.arguments),), None),
        ("tool", (), call.call_id),
    ]
