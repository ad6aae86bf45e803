"""Function calling through the gateway to vLLM (its stand-in), from the clients agents use:
the openai SDK, LangChain's `bind_tools` and LiteLLM.

The stand-in (bench/vllm_standin/) checks that tools, tool_choice, parallel_tool_calls and
the calls and results in the history reach it in vLLM's shape, and answers calls the way
vLLM's tool parser returns and streams them.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall
from openai.types.responses import ResponseFunctionToolCall
from pydantic import SecretStr

from bench.vllm_standin.answers import ANSWER, SERVED_MODEL
from bench.vllm_standin.state import StandIn
from tests.factories import WEATHER, flat_tool, gateway_client, node_report, streamed_calls

# LiteLLM fetches its model cost map from GitHub at import unless told to use its own copy.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

pytestmark = pytest.mark.e2e

# What the stand-in calls get_weather with: an example value per property.
ARGUMENTS = {"city": "Paris", "days": 3}


@pytest.fixture
async def client(standin_gateway: str, fresh: StandIn) -> AsyncIterator[openai.AsyncOpenAI]:
    async with gateway_client(standin_gateway) as c:
        yield c


def functions(message: Any) -> list[ChatCompletionMessageFunctionToolCall]:
    """A response message's calls, each checked to be a function call."""
    calls = list(message.tool_calls or ())
    assert calls and all(isinstance(c, ChatCompletionMessageFunctionToolCall) for c in calls)
    return calls


def sent(standin: StandIn) -> list[dict[str, Any]]:
    return [r.body for r in standin.requests if r.path == "/v1/chat/completions"]


async def test_auto_tools_pass_through_to_vllm_and_back(
    client: openai.AsyncOpenAI, fresh: StandIn
) -> None:
    response = await client.chat.completions.create(
        model=SERVED_MODEL,
        messages=[{"role": "user", "content": "CALL: what is the weather in Paris?"}],
        tools=[WEATHER],
        max_tokens=50,
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (made,) = functions(choice.message)
    # vLLM's own call id passes through: `none` returns the backend's calls unchanged.
    assert made.id.startswith("chatcmpl-tool-")
    assert made.function.name == "get_weather"
    assert json.loads(made.function.arguments) == ARGUMENTS
    assert response.usage is not None and response.usage.completion_tokens > 0
    (body,) = sent(fresh)
    assert body["tools"] == [WEATHER]
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is True


async def test_a_round_trip_sends_the_history_in_vllms_shape(
    client: openai.AsyncOpenAI, fresh: StandIn
) -> None:
    first = await client.chat.completions.create(
        model=SERVED_MODEL,
        messages=[{"role": "user", "content": "CALL: weather in Paris?"}],
        tools=[WEATHER],
    )
    calls = functions(first.choices[0].message)
    second = await client.chat.completions.create(
        model=SERVED_MODEL,
        messages=[
            {"role": "user", "content": "CALL: weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [c.model_dump() for c in calls],  # type: ignore[misc]
            },
            {"role": "tool", "tool_call_id": calls[0].id, "content": "18 C and sunny"},
        ],
        tools=[WEATHER],
    )
    assert second.choices[0].message.content == ANSWER
    assert second.choices[0].finish_reason == "stop"
    history = sent(fresh)[1]["messages"]
    assert history[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": calls[0].id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": calls[0].function.arguments},
            }
        ],
    }
    assert history[2] == {"role": "tool", "content": "18 C and sunny", "tool_call_id": calls[0].id}


@pytest.mark.parametrize("strategy", ["none", "cot"])
async def test_streamed_calls_through_vllm(
    client: openai.AsyncOpenAI, fresh: StandIn, strategy: str
) -> None:
    stream = await client.chat.completions.create(
        model=SERVED_MODEL,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"reasoning_strategy": strategy},
    )
    read = await streamed_calls(stream)
    assert read.finish == "tool_calls"
    first = read.pieces[0]
    assert first.id is not None and first.function and first.function.name == "get_weather"
    assert all(p.index == 0 for p in read.pieces)
    assert json.loads(read.arguments) == ARGUMENTS
    assert read.usage is not None and read.usage.completion_tokens > 0
    (body,) = sent(fresh)
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False


async def test_a_named_function_is_forced_by_vllm(
    client: openai.AsyncOpenAI, fresh: StandIn
) -> None:
    response = await client.chat.completions.create(
        model=SERVED_MODEL,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = response.choices[0]
    assert choice.finish_reason == "stop"  # as OpenAI and vLLM answer a named choice
    assert functions(choice.message)[0].function.name == "get_weather"
    (body,) = sent(fresh)
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


async def test_votes_on_vllms_calls(client: openai.AsyncOpenAI, fresh: StandIn) -> None:
    response = await client.chat.completions.create(
        model=SERVED_MODEL,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required",
        extra_body={"reasoning_strategy": "majority_vote", "reasoning_params": {"n": 3}},
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls is not None
    # Fresh ids: the voted call is not any one candidate's.
    assert choice.message.tool_calls[0].id.startswith("call_")
    (body,) = sent(fresh)
    assert body["n"] == 3 and body["tools"] == [WEATHER]


async def test_responses_call_streamed_and_round_tripped_in_vllms_shape(
    client: openai.AsyncOpenAI, fresh: StandIn
) -> None:
    # The Responses API's flat tool, and its items, reach vLLM as chat's.
    flat = flat_tool(WEATHER)
    async with client.responses.stream(
        model=SERVED_MODEL,
        input="Weather in Paris?",
        tools=[flat],
        tool_choice="required",
        parallel_tool_calls=False,
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    (call,) = final.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert call.call_id.startswith("chatcmpl-tool-")  # vLLM's own id, passed through
    assert (call.name, json.loads(call.arguments)) == ("get_weather", ARGUMENTS)
    # vLLM streams a call's arguments in pieces; each is a delta of the one item.
    assert kinds.count("response.output_item.added") == 1
    assert kinds.count("response.function_call_arguments.delta") >= 2
    (asked,) = sent(fresh)
    assert asked["tools"] == [WEATHER] and asked["tool_choice"] == "required"
    assert asked["parallel_tool_calls"] is False

    history: list[Any] = [
        {"role": "user", "content": "Weather in Paris?"},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 C and sunny"},
    ]
    answered = await client.responses.create(model=SERVED_MODEL, input=history, tools=[flat])
    assert answered.output_text == ANSWER
    messages = sent(fresh)[1]["messages"]
    assert messages[1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.arguments},
                }
            ],
        },
        {"role": "tool", "content": "18 C and sunny", "tool_call_id": call.call_id},
    ]


async def test_langchain_bind_tools(standin_gateway: str, fresh: StandIn) -> None:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str, days: int) -> str:
        """The weather in a city."""
        return f"sunny in {city} for {days} days"

    llm = ChatOpenAI(
        model=SERVED_MODEL,
        base_url=f"{standin_gateway}/v1",
        api_key=SecretStr("x"),
        max_retries=0,
    ).bind_tools([get_weather])
    question = HumanMessage("CALL: the weather in Paris for 3 days?")
    asked = await llm.ainvoke([question])
    assert isinstance(asked, AIMessage)
    (made,) = asked.tool_calls
    assert made["name"] == "get_weather" and made["args"] == ARGUMENTS
    result = ToolMessage(get_weather.invoke(made["args"]), tool_call_id=made["id"])
    answered = await llm.ainvoke([question, asked, result])
    assert answered.content == ANSWER
    history = sent(fresh)[1]["messages"]
    assert history[-1] == {
        "role": "tool",
        "content": "sunny in Paris for 3 days",
        "tool_call_id": made["id"],
    }


async def test_litellm_with_tools(standin_gateway: str, fresh: StandIn) -> None:
    import litellm

    response = await litellm.acompletion(
        model=f"openai/{SERVED_MODEL}",
        api_base=f"{standin_gateway}/v1",
        api_key="x",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required",
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    (made,) = choice.message.tool_calls
    assert made.function.name == "get_weather"
    assert json.loads(made.function.arguments) == ARGUMENTS


async def test_node_clients_with_tools(standin_gateway: str, fresh: StandIn) -> None:
    # The openai Node SDK and the Vercel AI SDK.
    report = node_report("tools.mjs", standin_gateway, SERVED_MODEL)
    assert report["openai"] == {
        "finish_reason": "tool_calls",
        "id": report["openai"]["id"],
        "name": "get_weather",
        "arguments": ARGUMENTS,
    }
    assert report["openai_stream"] == {
        "finish_reason": "tool_calls",
        "name": "get_weather",
        "arguments": ARGUMENTS,
    }
    # generateText: the call, the tool run with its input, then the answer to the result.
    assert report["ai_sdk"] == {
        "steps": 2,
        "first_finish": "tool-calls",
        "calls": [{"name": "get_weather", "input": ARGUMENTS}],
        "ran": [ARGUMENTS],
        "text": ANSWER,
    }
    tool_turn = sent(fresh)[-1]["messages"][-1]
    assert tool_turn["role"] == "tool" and tool_turn["content"] == "18 C and sunny"
