"""Tools written into the prompt and calls read back out of the text (backends.tool_calls)."""

from __future__ import annotations

import json

import pytest

from backends.base import ChatMessage, ChatPrompt, ForcedTool, Tool, ToolCall, Tools
from backends.tool_calls import (
    HeldText,
    forced_schema,
    parse_calls,
    with_tools_in_prompt,
)

WEATHER = Tool(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool("get_time")
AUTO = Tools((WEATHER, TIME))


def block(name: str, arguments: object) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def test_hermes_blocks_become_calls_with_the_text_before_them() -> None:
    text = f"Let me look.\n{block('get_weather', {'city': 'Paris'})}\n{block('get_time', {})}"
    parsed = parse_calls(text, AUTO, "stop")
    assert parsed.text == "Let me look."
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]
    assert parsed.finish_reason == "tool_calls"
    assert all(c.id.startswith("call_") for c in parsed.calls)
    assert parsed.calls[0].id != parsed.calls[1].id


def test_an_unterminated_last_block_still_counts_when_its_json_is_whole() -> None:
    parsed = parse_calls('<tool_call>{"name": "get_time", "arguments": {}}', AUTO, "stop")
    assert [c.name for c in parsed.calls] == ["get_time"]


@pytest.mark.parametrize(
    ("text", "finish"),
    [
        ("It is sunny.", "stop"),
        (block("launch_rockets", {}), "stop"),  # not an offered function
        ('<tool_call>{"name": "get_time", "argu', "stop"),  # broken JSON
        (block("get_time", {}), "length"),  # cut off: never trusted as a call
    ],
)
def test_text_without_a_valid_call_stays_text(text: str, finish: str) -> None:
    parsed = parse_calls(text, AUTO, finish)  # type: ignore[arg-type]
    assert parsed.calls == () and parsed.text == text and parsed.finish_reason == finish


def test_tool_choice_none_reads_no_calls() -> None:
    text = block("get_time", {})
    assert parse_calls(text, Tools((TIME,), "none"), "stop").calls == ()


def test_forced_choices_read_bare_json() -> None:
    required = parse_calls(
        '[{"name": "get_weather", "arguments": {"city": "Oslo"}}]',
        Tools((WEATHER, TIME), "required"),
        "stop",
    )
    assert [(c.name, c.arguments) for c in required.calls] == [("get_weather", '{"city": "Oslo"}')]
    assert required.finish_reason == "tool_calls" and required.text == ""
    named = parse_calls(
        '{"city": "Oslo"}', Tools((WEATHER, TIME), ForcedTool("get_weather")), "stop"
    )
    assert [(c.name, c.arguments) for c in named.calls] == [("get_weather", '{"city": "Oslo"}')]
    # OpenAI's finish reason for a named function is "stop".
    assert named.finish_reason == "stop"


def test_without_parallel_calls_only_the_first_is_kept() -> None:
    text = block("get_time", {}) + block("get_weather", {"city": "Rome"})
    parsed = parse_calls(text, Tools((WEATHER, TIME), parallel=False), "stop")
    assert [c.name for c in parsed.calls] == ["get_time"]


def test_forced_schemas() -> None:
    required = forced_schema(Tools((WEATHER, TIME), "required", parallel=False))
    assert required is not None and required.json_schema is not None
    schema = required.json_schema
    assert schema["type"] == "array" and schema["minItems"] == 1 and schema["maxItems"] == 1
    names = [s["properties"]["name"]["enum"] for s in schema["items"]["anyOf"]]
    assert names == [["get_weather"], ["get_time"]]
    assert schema["items"]["anyOf"][0]["properties"]["arguments"] == WEATHER.parameters
    named = forced_schema(Tools((WEATHER, TIME), ForcedTool("get_time")))
    assert named is not None and named.json_schema == {"type": "object", "properties": {}}
    assert forced_schema(AUTO) is None


def test_the_prompt_lists_the_tools_and_renders_the_history() -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    prompt = ChatPrompt(
        (
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "Weather in Paris?"),
            ChatMessage("assistant", "", (call,)),
            ChatMessage("tool", "18 C", tool_call_id="call_1"),
        ),
        tools=AUTO,
    )
    system, user, assistant, tool = with_tools_in_prompt(prompt)
    assert system.content.startswith("Be brief.\n\n")
    assert "<tools>" in system.content and '"name": "get_weather"' in system.content
    assert user == ChatMessage("user", "Weather in Paris?")
    assert assistant.content == block("get_weather", {"city": "Paris"})
    assert tool == ChatMessage("tool", "<tool_response>\n18 C\n</tool_response>")


def test_held_text_streams_until_a_call_begins() -> None:
    held = HeldText(AUTO)
    assert held.feed("Let me <tool") == "Let me "
    assert held.feed("_call>{") == ""
    assert held.feed("...") == ""
    assert held.held == "<tool_call>{..."
    plain = HeldText(AUTO)
    assert plain.feed("a <b") == "a <b"
    forced = HeldText(Tools((TIME,), "required"))
    assert forced.feed("[{") == "" and forced.held == "[{"
