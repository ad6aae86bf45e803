"""The voting strategies with tools: candidates that called functions vote with their calls,
verifiers see the calls, and the winner's calls come back with fresh ids."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from backends.base import (
    ChatMessage,
    ChatPrompt,
    ForcedTool,
    SamplingParams,
    Tool,
    ToolCall,
    Tools,
)
from backends.scripted import ScriptedBackend
from backends.tool_calls import render_call
from strategies.base import ParamsContext, StrategyRequest, StrategyResult
from strategies.context import StrategyContext
from strategies.limits import Limits
from strategies.registry import get_strategy, parse_params
from strategies.sampling import calls_answer
from tests.factories import TableVerifier, tool_call_text
from verifiers.base import Verifier

CONTEXT = ParamsContext(verifiers=frozenset({"v"}), limits=Limits(max_n=16))
TOOLS = Tools((Tool("get_weather"), Tool("get_time")))


call = tool_call_text


def seen(name: str, arguments: dict[str, Any]) -> str:
    """A call as a verifier is shown it."""
    return render_call(name, json.dumps(arguments))


async def run(
    name: str, texts: list[str], verifier: TableVerifier | None = None, tools: Tools = TOOLS
) -> tuple[StrategyResult, ScriptedBackend]:
    backend = ScriptedBackend(texts)
    strategy = get_strategy(name)
    raw: dict[str, Any] = {"n": len(texts), "return_trace": True}
    if verifier is not None:
        raw["verifier"] = "v"
    params = parse_params(strategy, raw, CONTEXT)
    verifiers: dict[str, Verifier] = {"v": verifier} if verifier else {}
    ctx = StrategyContext(backend=backend, request_id="r", verifiers=verifiers)
    prompt = ChatPrompt((ChatMessage("user", "Weather?"),), tools=tools)
    request = StrategyRequest(prompt, SamplingParams(max_tokens=64))
    return await strategy.run(request, params, ctx), backend


async def test_best_of_n_returns_the_best_scored_calls_with_a_fresh_id() -> None:
    texts = [call("get_time", {}), call("get_weather", {"city": "Paris"}), "It is sunny."]
    verifier = TableVerifier(
        {
            seen("get_time", {}): 0.2,
            seen("get_weather", {"city": "Paris"}): 0.9,
            "It is sunny.": 0.5,
        }
    )
    result, backend = await run("best_of_n", texts, verifier)
    (choice,) = result.choices
    assert choice.finish_reason == "tool_calls" and choice.content == ""
    ((made),) = choice.tool_calls
    assert (made.name, json.loads(made.arguments)) == ("get_weather", {"city": "Paris"})
    assert made.id.startswith("call_")
    # The verifier scored the calls as the model writes them, all three in one call.
    ((_, shown),) = verifier.calls
    assert [c.text for c in shown] == list(verifier.table)
    assert len(backend.calls) == 1


async def test_weighted_vote_adds_the_weights_of_equal_calls() -> None:
    texts = [
        call("get_weather", {"city": "Oslo", "days": 2}),
        "It is 4.",
        call("get_weather", {"days": 2.0, "city": "Oslo"}),
    ]
    verifier = TableVerifier(
        {
            seen("get_weather", {"city": "Oslo", "days": 2}): 0.3,
            "It is 4.": 0.5,
            seen("get_weather", {"days": 2.0, "city": "Oslo"}): 0.3,
        }
    )
    result, _ = await run("weighted_vote", texts, verifier)
    assert result.choices[0].finish_reason == "tool_calls"
    assert result.trace is not None
    assert result.trace["votes"] == {"4": 0.5, 'get_weather({"city":"Oslo","days":2})': 0.6}


async def test_a_set_of_calls_votes_whatever_its_order() -> None:
    both = call("get_time", {}) + call("get_weather", {"city": "Rome"})
    reversed_ = call("get_weather", {"city": "Rome"}) + call("get_time", {})
    result, _ = await run("majority_vote", [call("get_time", {}), both, reversed_])
    assert [c.name for c in result.choices[0].tool_calls] == ["get_time", "get_weather"]
    assert result.trace is not None
    assert result.trace["votes"] == {
        "get_time({})": 1.0,
        'get_time({}); get_weather({"city":"Rome"})': 2.0,
    }


async def test_where_a_call_is_forced_a_call_cut_off_before_it_closed_does_not_vote() -> None:
    # What vLLM returns for a forced call cut by max_tokens: its JSON, unclosed, as text.
    cut = '[{"name": "get_weather", "parameters": {"city": "Paris 12'
    texts = [cut, call("get_weather", {"city": "Oslo"}), call("get_time", {})]
    result, _ = await run(
        "majority_vote", texts, tools=dataclasses.replace(TOOLS, choice="required")
    )
    (choice,) = result.choices
    assert choice.finish_reason == "tool_calls"
    assert [c.name for c in choice.tool_calls] == ["get_weather"]
    assert result.trace is not None
    assert result.trace["votes"] == {'get_weather({"city":"Oslo"})': 1.0, "get_time({})": 1.0}
    # Offered, not forced, the same text is an answer ("12"), and the earliest group wins.
    result, _ = await run("majority_vote", texts)
    assert result.choices[0].finish_reason == "stop" and not result.choices[0].tool_calls


def test_calls_answer_is_canonical() -> None:
    one = (ToolCall("a", "f", '{"x": 1.0, "y": [1e0]}'), ToolCall("b", "g", "{}"))
    other = (ToolCall("c", "g", ""), ToolCall("d", "f", '{"y":[1],"x":1}'))
    assert calls_answer(one) == calls_answer(other) == 'f({"x":1,"y":[1]}); g({})'


def test_calls_vote_by_canonical_arguments_whatever_their_spelling() -> None:
    def call(name: str, arguments: str) -> ToolCall:
        return ToolCall("id", name, arguments)

    same = calls_answer([call("f", '{"b": 1.0, "a": [2e0, "x"]}'), call("g", "")])
    assert same == calls_answer([call("g", "{}"), call("f", '{"a":[2,"x"],"b":1}')])
    assert calls_answer([call("f", '{"a": 1.5}')]) != calls_answer([call("f", '{"a": 1}')])
    assert calls_answer([call("f", "not json")]) == "f(not json)"


async def test_a_named_function_forced_ends_with_stop_as_openai_does() -> None:
    # `none` answered "stop" (as OpenAI and vLLM do) while a vote said "tool_calls".
    name = "majority_vote"
    named = Tools((Tool("get_weather"), Tool("get_time")), choice=ForcedTool("get_weather"))
    texts = [call("get_weather", {"city": "Paris"})] * 3
    result, _ = await run(name, texts, tools=named)
    (choice,) = result.choices
    assert choice.tool_calls and choice.finish_reason == "stop"
    required = Tools((Tool("get_weather"),), choice="required")
    result, _ = await run(name, texts, tools=required)
    assert result.choices[0].finish_reason == "tool_calls"
