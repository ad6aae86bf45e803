"""Strategies with `response_format`: JSON candidates vote by canonical JSON, cot keeps the JSON
whole, and the constraint reaches every backend call."""

from __future__ import annotations

import json
from typing import Any

import pytest

from backends.base import StructuredOutput
from backends.scripted import ScriptedBackend
from strategies.base import ParamsContext, StrategyResult
from strategies.context import StrategyContext
from strategies.limits import Limits
from strategies.registry import get_strategy, parse_params
from tests.factories import TableVerifier, chat_request
from verifiers.answer_match import canonical_json
from verifiers.base import Verifier

CONTEXT = ParamsContext(verifiers=frozenset({"v"}), limits=Limits(max_n=16))
SCHEMA = StructuredOutput({"type": "object", "properties": {"city": {"type": "string"}}})


async def run(
    name: str,
    texts: list[str],
    params: dict[str, Any] | None = None,
    verifier: TableVerifier | None = None,
    **sampling: Any,
) -> tuple[StrategyResult, ScriptedBackend]:
    backend = ScriptedBackend(texts)
    strategy = get_strategy(name)
    parsed = parse_params(strategy, params, CONTEXT)
    verifiers: dict[str, Verifier] = {"v": verifier} if verifier else {}
    ctx = StrategyContext(backend=backend, request_id="r", verifiers=verifiers)
    request = chat_request(structured=SCHEMA, **sampling)
    return await strategy.run(request, parsed, ctx), backend


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ('{"b": 2, "a": 1.0}', '{"a":1,"b":2}'),
        ('{"a": 1e2, "b": [0.50, -0.0]}', '{"a":100,"b":[0.5,0]}'),
        ('{"a": "Ünï", "b": null, "c": true}', '{"a":"Ünï","b":null,"c":true}'),
        ('{"a": 1', None),
        ("not json", None),
    ],
)
def test_canonical_json(text: str, canonical: str | None) -> None:
    assert canonical_json(text) == canonical


async def test_majority_vote_groups_equal_json_whatever_its_form() -> None:
    texts = [
        '{"city": "Paris"}',
        '{"city": "paris"}',
        '{ "city" : "paris" }',
        '{"city": "Rome"}',
        '{"city": "par',  # cut off: no answer, no vote
    ]
    result, backend = await run("majority_vote", texts, {"n": 5, "return_trace": True})
    # Case matters inside JSON: "Paris" and "paris" are different answers.
    assert result.choices[0].content == '{"city": "paris"}'
    assert result.trace is not None
    assert result.trace["votes"] == {
        '{"city":"Paris"}': 1.0,
        '{"city":"paris"}': 2.0,
        '{"city":"Rome"}': 1.0,
    }
    assert result.trace["candidates"][4]["answer"] is None
    assert backend.sampled[0].structured == SCHEMA


async def test_json_numbers_vote_by_value_not_by_math() -> None:
    # Without JSON these would be compared by math-verify; as JSON, 0.5 and 1/2 cannot meet.
    texts = ['{"x": 0.5}', '{"x": 0.50}', '{"x": "1/2"}']
    result, _ = await run("majority_vote", texts, {"n": 3, "return_trace": True})
    assert result.trace is not None
    assert result.trace["votes"] == {'{"x":0.5}': 2.0, '{"x":"1/2"}': 1.0}


async def test_weighted_vote_sums_scores_per_json_answer() -> None:
    texts = ['{"city": "Rome"}', '{"city":"Paris"}', '{"city": "Paris"}']
    verifier = TableVerifier({texts[0]: 0.9, texts[1]: 0.5, texts[2]: 0.5})
    result, _ = await run(
        "weighted_vote", texts, {"n": 3, "verifier": "v", "return_trace": True}, verifier
    )
    assert result.choices[0].content == texts[1]
    assert result.trace is not None and result.trace["votes"]['{"city":"Paris"}'] == 1.0


async def test_best_of_n_keeps_the_constraint_on_every_candidate() -> None:
    texts = ['{"city": "Rome"}', '{"city": "Paris"}']
    verifier = TableVerifier({texts[0]: 0.2, texts[1]: 0.7})
    result, backend = await run("best_of_n", texts, {"n": 2, "verifier": "v"}, verifier)
    assert result.choices[0].content == texts[1]
    assert all(p.structured == SCHEMA for p in backend.sampled)


async def test_cot_returns_the_json_whole_with_a_json_instruction() -> None:
    # An answer marker inside a JSON string must not split the answer.
    text = '{"steps": "2 + 2 is 4. Answer: 4", "answer": 4}'
    result, backend = await run("cot", [text])
    assert result.choices[0].content == text
    assert json.loads(result.choices[0].content)["answer"] == 4
    assert result.choices[0].reasoning is None
    system = backend.calls[0].prompt.messages[0]  # type: ignore[union-attr]
    assert system.role == "system" and "JSON" in system.content
    assert backend.sampled[0].structured == SCHEMA
