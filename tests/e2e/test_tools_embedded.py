"""Function calling on the real embedded SmolLM2: the tools reach the model's prompt in the
documented Hermes-style format, a streamed answer equals the whole one, and a forced call is
always a valid call.

The small model calls tools reliably only when forced, so `auto` answers are checked for their
shape (text, or calls of an offered function), never for whether it called.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import openai
import pytest
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)

from backends.base import ChatMessage, ChatPrompt, Tool, Tools
from backends.tool_calls import with_tools_in_prompt
from tests.e2e.conftest import MODEL
from tests.factories import function_tool

pytestmark = pytest.mark.e2e

WEATHER = function_tool(
    "get_weather",
    "Get the current weather in a city",
    {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    required=["city", "unit"],
    is_closed=True,
)
QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the weather in Paris right now?"}
]


@cache
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from backends.smollm2 import converted_model_dir

    return AutoTokenizer.from_pretrained(converted_model_dir())


def calls_of(message: Any) -> list[tuple[str, dict[str, Any]]]:
    """A message's calls as (name, parsed arguments), each checked to be a function call."""
    calls = []
    for call in message.tool_calls or ():
        assert isinstance(call, ChatCompletionMessageFunctionToolCall)
        assert call.id.startswith("call_")
        calls.append((call.function.name, json.loads(call.function.arguments)))
    return calls


async def test_the_tools_are_in_the_prompt_the_model_reads(client: openai.AsyncOpenAI) -> None:
    response = await client.chat.completions.create(
        model=MODEL, messages=QUESTION, tools=[WEATHER], max_tokens=1, temperature=0
    )
    function = WEATHER["function"]
    prompt = ChatPrompt(
        (ChatMessage("user", "What is the weather in Paris right now?"),),
        tools=Tools(
            (Tool(function["name"], function.get("description"), dict(function["parameters"])),)
        ),
    )
    messages = [{"role": m.role, "content": m.content} for m in with_tools_in_prompt(prompt)]
    rendered = tokenizer().apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "<tools>" in rendered and '"name": "get_weather"' in rendered
    assert response.usage is not None
    assert response.usage.prompt_tokens == len(
        tokenizer()(rendered, add_special_tokens=False)["input_ids"]
    )


async def test_an_auto_answer_is_text_or_offered_calls_streamed_or_not(
    client: openai.AsyncOpenAI,
) -> None:
    fields: dict[str, Any] = {
        "model": MODEL,
        "messages": QUESTION,
        "tools": [WEATHER],
        "max_tokens": 32,
        "temperature": 0,
    }
    whole = (await client.chat.completions.create(**fields)).choices[0]
    calls = calls_of(whole.message)
    if calls:
        assert whole.finish_reason == "tool_calls"
        assert {name for name, _ in calls} == {"get_weather"}
    assert "<tool_call>" not in (whole.message.content or "")
    stream = await client.chat.completions.create(**fields, stream=True)
    content, finish = "", None
    pieces: list[Any] = []
    async for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            pieces += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    # Greedy decoding: the stream carries the same answer, its calls whole at the end.
    assert finish == whole.finish_reason
    assert "<tool_call>" not in content
    streamed = [(p.function.name, json.loads(p.function.arguments)) for p in pieces]
    assert streamed == calls
    if not calls:
        assert content == whole.message.content


async def test_a_round_trip_answers_from_the_tool_result(client: openai.AsyncOpenAI) -> None:
    response = await client.chat.completions.create(
        model=MODEL,
        messages=[
            *QUESTION,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"city": "Paris", "unit": "celsius"}',
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
        ],
        tools=[WEATHER],
        max_tokens=16,
        temperature=0,
    )
    choice = response.choices[0]
    assert choice.message.content or choice.message.tool_calls


# The forced path sets SamplingParams.structured (backends.tool_calls.forced_schema), which the
# embedded engine enforces with its grammar (backends.embedded_grammar).
@pytest.mark.parametrize(
    "tool_choice",
    ["required", {"type": "function", "function": {"name": "get_weather"}}],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_a_forced_call_is_always_valid_for_its_schema(
    client: openai.AsyncOpenAI, tool_choice: Any, stream: bool
) -> None:
    fields: dict[str, Any] = {
        "model": MODEL,
        "messages": QUESTION,
        "tools": [WEATHER],
        "tool_choice": tool_choice,
        "parallel_tool_calls": False,
        "max_tokens": 64,
        "temperature": 0,
    }
    if not stream:
        choice = (await client.chat.completions.create(**fields)).choices[0]
        calls = calls_of(choice.message)
        finish = choice.finish_reason
    else:
        pieces: list[Any] = []
        finish = None
        async for chunk in await client.chat.completions.create(**fields, stream=True):
            for delta in chunk.choices:
                pieces += delta.delta.tool_calls or []
                finish = delta.finish_reason or finish
        calls = [(p.function.name, json.loads(p.function.arguments)) for p in pieces]
    assert finish == ("tool_calls" if tool_choice == "required" else "stop")
    ((name, arguments),) = calls
    assert name == "get_weather"
    assert set(arguments) == {"city", "unit"}
    assert isinstance(arguments["city"], str) and arguments["unit"] in ("celsius", "fahrenheit")
