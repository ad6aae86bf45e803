"""majority_vote, weighted_vote and best_of_n pick exactly what their definitions pick."""

from __future__ import annotations

from typing import Any

import pytest

from backends.scripted import ScriptedBackend
from strategies.base import InvalidParamsError, ParamsContext, StrategyResult
from strategies.context import StrategyContext
from strategies.limits import Limits
from strategies.registry import get_strategy, parse_params
from tests.factories import TableVerifier, chat_request
from verifiers.base import Verifier, VerifierError
from verifiers.equivalence import EquivalencePool

CONTEXT = ParamsContext(verifiers=frozenset({"v"}), limits=Limits(max_n=16))


async def run(
    name: str,
    texts: list[str],
    params: dict[str, Any] | None = None,
    verifier: TableVerifier | None = None,
    equivalence: EquivalencePool | None = None,
    **sampling: Any,
) -> tuple[StrategyResult, ScriptedBackend]:
    backend = ScriptedBackend(texts)
    strategy = get_strategy(name)
    parsed = parse_params(
        strategy, {"n": len(texts), "return_trace": True, **(params or {})}, CONTEXT
    )
    verifiers: dict[str, Verifier] = {"v": verifier} if verifier else {}
    ctx = StrategyContext(
        backend=backend, request_id="r", verifiers=verifiers, equivalence=equivalence
    )
    return await strategy.run(chat_request(**sampling), parsed, ctx), backend


async def test_majority_picks_the_largest_group_in_one_call() -> None:
    texts = ["so 3", "it is 4", "clearly 4", "maybe 5", "4 again"]
    result, backend = await run("majority_vote", texts)
    assert result.choices[0].content == "it is 4"
    assert result.trace is not None
    assert result.trace["votes"] == {"3": 1.0, "4": 3.0, "5": 1.0}
    assert result.trace["answer"] == "4"
    assert [c["answer"] for c in result.trace["candidates"]] == ["3", "4", "4", "5", "4"]
    assert len(backend.calls) == 1 and backend.sampled[0].n == 5


async def test_majority_tie_goes_to_the_group_seen_first() -> None:
    result, _ = await run("majority_vote", ["a 7", "b 9", "c 9", "d 7"])
    assert result.choices[0].content == "a 7"


async def test_equivalent_answers_vote_together() -> None:
    texts = ["x is \\boxed{\\frac{1}{2}}", "so 0.75", "it is 0.5", "answer 1/2", "0.75 it is"]
    equivalence = EquivalencePool()
    try:
        result, _ = await run("majority_vote", texts, equivalence=equivalence)
    finally:
        await equivalence.aclose()
    assert result.choices[0].content == texts[0]
    assert result.trace is not None and result.trace["votes"]["\\frac{1}{2}"] == 3.0
    assert "answers_compared_as_text" not in result.trace


async def test_answers_math_verify_could_not_compare_are_grouped_as_text_and_flagged() -> None:
    texts = ["\\boxed{\\left(10^{9}\\right)!}", "\\boxed{2}", "\\boxed{\\left(10^{9}\\right)!}"]
    equivalence = EquivalencePool(timeout_s=1.0)
    try:
        result, _ = await run("majority_vote", texts, equivalence=equivalence)
    finally:
        await equivalence.aclose()
    assert result.choices[0].content == texts[0]
    assert result.trace is not None and "math-verify was stopped" in str(
        result.trace["answers_compared_as_text"]
    )


async def test_request_n_returns_the_top_groups() -> None:
    result, _ = await run("majority_vote", ["1", "2", "2", "3", "3", "3"], n=2)
    assert [c.content for c in result.choices] == ["3", "2"]


async def test_no_answer_anywhere_returns_the_first_candidate() -> None:
    result, _ = await run("majority_vote", ["", "  "], {"answer_format": "last_number"})
    assert result.choices[0].content == ""
    assert result.trace is not None and result.trace["votes"] == {}


async def test_regex_answer_format() -> None:
    texts = ["ANSWER=[x] 9", "ANSWER=[y] 1", "ANSWER=[y] 2"]
    params = {"answer_format": "regex", "answer_pattern": r"ANSWER=\[(\w)\]"}
    result, _ = await run("majority_vote", texts, params)
    assert result.choices[0].content == "ANSWER=[y] 1"


def test_regex_needs_a_valid_pattern() -> None:
    strategy = get_strategy("majority_vote")
    for bad in ({"answer_format": "regex"}, {"answer_format": "regex", "answer_pattern": "("}):
        with pytest.raises(InvalidParamsError):
            parse_params(strategy, bad, CONTEXT)


def test_limits_and_verifier_names_are_checked_before_running() -> None:
    with pytest.raises(InvalidParamsError, match="at most 16"):
        parse_params(get_strategy("majority_vote"), {"n": 17}, CONTEXT)
    with pytest.raises(InvalidParamsError, match="configured: v"):
        parse_params(get_strategy("best_of_n"), {"verifier": "nope"}, CONTEXT)


async def test_weighted_vote_sums_scores_per_group() -> None:
    # 4 has two votes worth 0.3 in all; 5 has one vote worth 0.9: weight beats count.
    texts = ["it is 4", "so 4", "answer 5"]
    verifier = TableVerifier({"it is 4": 0.1, "so 4": 0.2, "answer 5": 0.9})
    result, _ = await run("weighted_vote", texts, {"verifier": "v"}, verifier)
    assert result.choices[0].content == "answer 5"
    assert result.trace is not None
    assert result.trace["votes"] == pytest.approx({"5": 0.9, "4": 0.3})
    assert verifier.calls[0][0] == "What is 2 + 2?"


async def test_weighted_vote_answers_with_the_groups_best_candidate() -> None:
    texts = ["first 4", "second 4", "third 5"]
    verifier = TableVerifier({"first 4": 0.2, "second 4": 0.6, "third 5": 0.7})
    result, _ = await run("weighted_vote", texts, {"verifier": "v"}, verifier)
    assert result.choices[0].content == "second 4"


async def test_best_of_n_takes_the_top_score_earliest_on_ties() -> None:
    texts = ["a 1", "b 2", "c 3"]
    verifier = TableVerifier({"a 1": 0.5, "b 2": 0.8, "c 3": 0.8})
    result, _ = await run("best_of_n", texts, {"verifier": "v"}, verifier)
    assert result.choices[0].content == "b 2"
    assert result.trace is not None
    assert [c["score"] for c in result.trace["candidates"]] == [0.5, 0.8, 0.8]


@pytest.mark.parametrize(
    ("aggregation", "winner"), [("last", "a 1"), ("min", "b 2"), ("prod", "b 2"), ("mean", "a 1")]
)
async def test_best_of_n_aggregates_step_scores(aggregation: str, winner: str) -> None:
    steps = {"a 1": (0.9, 0.2, 0.95), "b 2": (0.6, 0.6, 0.6)}
    result, _ = await run(
        "best_of_n",
        list(steps),
        {"verifier": "v", "aggregation": aggregation},
        TableVerifier(steps),
    )
    assert result.choices[0].content == winner
    assert result.trace is not None
    assert result.trace["candidates"][0]["step_scores"] == [0.9, 0.2, 0.95]


async def test_verifier_failure_is_an_error_by_default() -> None:
    verifier = TableVerifier({}, error=VerifierError("PRM down"))
    with pytest.raises(VerifierError, match="PRM down"):
        await run("best_of_n", ["1", "2"], {"verifier": "v"}, verifier)


@pytest.mark.parametrize("name", ["best_of_n", "weighted_vote"])
async def test_verifier_failure_falls_back_to_voting_when_allowed(name: str) -> None:
    verifier = TableVerifier({}, error=VerifierError("PRM down"))
    texts = ["x 2", "y 3", "z 3"]
    result, _ = await run(name, texts, {"verifier": "v", "on_verifier_error": "vote"}, verifier)
    assert result.choices[0].content == "y 3"
    assert result.fallback is not None and "PRM down" in result.fallback
    assert "majority vote" in result.fallback
    assert result.trace is not None and result.trace["fallback"] == result.fallback


async def test_candidates_carry_the_logprobs_a_verifier_needs() -> None:
    verifier = TableVerifier({"a 1": 0.1, "b 2": 0.2}, logprobs=5)
    result, backend = await run("best_of_n", ["a 1", "b 2"], {"verifier": "v"}, verifier)
    assert backend.sampled[0].logprobs == 5
    assert all(c.logprobs for c in verifier.calls[0][1])
    # The client asked for no logprobs, so the answer carries none.
    assert result.choices[0].logprobs is None


async def test_effort_sets_the_number_of_candidates() -> None:
    backend = ScriptedBackend(["1"])
    strategy = get_strategy("majority_vote")
    ctx = StrategyContext(backend=backend, request_id="r")
    request = chat_request()
    request = type(request)(request.prompt, request.sampling, reasoning_effort="low")
    await strategy.run(request, parse_params(strategy, None, CONTEXT), ctx)
    assert backend.sampled[0].n == 4
