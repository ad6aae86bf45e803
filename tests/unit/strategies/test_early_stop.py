"""Early-stopped voting: the stopping rules with exact values, and majority vote drawing its
candidates in waves on scripted answers."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from backends.scripted import ScriptedBackend
from strategies.base import InvalidParamsError, ParamsContext, StrategyResult
from strategies.context import StrategyContext
from strategies.early_stop import EarlyStop, leader_probability, settled
from strategies.limits import Limits
from strategies.registry import get_strategy, parse_params
from tests.factories import TableVerifier, chat_request

CONTEXT = ParamsContext(verifiers=frozenset({"v"}), limits=Limits(max_n=16))


@pytest.mark.parametrize(("a", "b"), [(0, 0), (3, 0), (3, 1), (5, 2), (8, 8), (12, 3), (2, 5)])
def test_leader_probability_is_the_beta_tail(a: int, b: int) -> None:
    # For integer votes, P(Beta(a + 1, b + 1) > 1/2) = P(Binomial(a + b + 1, 1/2) <= a).
    n = a + b + 1
    exact = sum(math.comb(n, j) for j in range(a + 1)) / 2**n
    assert leader_probability(a, b) == pytest.approx(exact, abs=1e-9)


def test_beta_rule_stops_at_its_threshold() -> None:
    rule = EarlyStop(method="beta", threshold=0.95)
    # 4-0 gives 31/32 = 0.969; 3-1 gives 0.8125.
    assert settled(rule, [4.0], voted=4, left=12)
    assert not settled(rule, [3.0, 1.0], voted=4, left=12)
    # Weighted totals count as votes in proportion: 0.9 and 0.1 over 4 voters are 3.6 and 0.4.
    assert settled(rule, [0.9 * 4, 0.1 * 4], voted=4, left=0) == (
        leader_probability(3.6, 0.4) >= 0.95
    )


def test_margin_rule_stops_when_the_leader_cannot_be_overtaken() -> None:
    rule = EarlyStop(method="margin")
    assert settled(rule, [5.0, 1.0], voted=6, left=3)
    assert not settled(rule, [5.0, 1.0], voted=6, left=4)
    assert not settled(rule, [], voted=0, left=4)
    # Weighted: each sample left may add up to `most`.
    assert not settled(rule, [2.0, 0.5], voted=4, left=2, most=0.8)


def test_early_stop_params_are_checked() -> None:
    with pytest.raises(ValidationError):
        EarlyStop.model_validate({"method": "beta", "threshold": 1.5})
    with pytest.raises(ValidationError):
        EarlyStop.model_validate({"method": "vibes"})


async def run(
    texts: list[str], n: int, early_stop: dict[str, Any], **sampling: Any
) -> tuple[StrategyResult, ScriptedBackend]:
    backend = ScriptedBackend(texts)
    strategy = get_strategy("majority_vote")
    params = {"n": n, "return_trace": True, "early_stop": early_stop}
    parsed = parse_params(strategy, params, CONTEXT)
    ctx = StrategyContext(backend=backend, request_id="r", verifiers={})
    return await strategy.run(chat_request(**sampling), parsed, ctx), backend


async def test_an_agreeing_first_wave_answers_at_once() -> None:
    result, backend = await run(["it is 4"], 16, {"method": "beta"})
    assert [p.n for p in backend.sampled] == [4]
    assert result.choices[0].content == "it is 4"
    assert result.stopped_early == "early_stop: beta rule settled after 4 of 16"
    assert result.trace is not None and len(result.trace["candidates"]) == 4
    assert result.usage.calls == 1


async def test_a_split_vote_draws_every_wave() -> None:
    result, backend = await run(["so 4", "so 5"], 16, {"method": "beta", "wave": 4})
    assert [p.n for p in backend.sampled] == [4, 4, 4, 4]
    assert result.stopped_early is None
    assert result.trace is not None and len(result.trace["candidates"]) == 16


async def test_margin_stops_once_the_rest_cannot_change_the_answer() -> None:
    # 4-0 with 2 left: the leader cannot be caught.
    result, backend = await run(["4"], 6, {"method": "margin"})
    assert [p.n for p in backend.sampled] == [4]
    assert result.stopped_early is not None
    # 4-0 with 4 left could still tie: a second wave is drawn.
    result, backend = await run(["4"], 8, {"method": "margin"})
    assert [p.n for p in backend.sampled] == [4, 4]
    assert result.stopped_early is None


async def test_waves_of_a_seeded_request_draw_different_candidates() -> None:
    _, backend = await run(["so 4", "so 5"], 8, {"method": "beta", "wave": 4}, seed=7)
    assert [p.seed for p in backend.sampled] == [7, 11]


async def test_without_early_stop_one_call_draws_all() -> None:
    backend = ScriptedBackend(["4"])
    strategy = get_strategy("majority_vote")
    parsed = parse_params(strategy, {"n": 16}, CONTEXT)
    ctx = StrategyContext(backend=backend, request_id="r", verifiers={})
    result = await strategy.run(chat_request(), parsed, ctx)
    assert [p.n for p in backend.sampled] == [16]
    assert result.stopped_early is None


async def run_verified(
    name: str, texts: list[str], table: dict[str, float], early_stop: dict[str, Any]
) -> tuple[StrategyResult, ScriptedBackend, TableVerifier]:
    backend, verifier = ScriptedBackend(texts), TableVerifier(table)
    strategy = get_strategy(name)
    params = {"n": 16, "verifier": "v", "return_trace": True, "early_stop": early_stop}
    parsed = parse_params(strategy, params, CONTEXT)
    ctx = StrategyContext(backend=backend, request_id="r", verifiers={"v": verifier})
    return await strategy.run(chat_request(), parsed, ctx), backend, verifier


async def test_best_of_n_stops_once_a_candidate_scores_the_threshold() -> None:
    texts = ["a 1", "b 2", "c 3", "d 4", "e 5", "f 6"]
    table = {"a 1": 0.2, "b 2": 0.3, "c 3": 0.1, "d 4": 0.4, "e 5": 0.95, "f 6": 0.5}
    result, backend, verifier = await run_verified(
        "best_of_n", texts, table, {"method": "score", "threshold": 0.9}
    )
    # The first wave's best is 0.4; the second holds 0.95, so no third is drawn.
    assert [p.n for p in backend.sampled] == [4, 4]
    assert [len(candidates) for _, candidates in verifier.calls] == [4, 4]
    assert result.choices[0].content == "e 5"
    assert result.stopped_early == "early_stop: score rule settled after 8 of 16"


async def test_weighted_vote_stops_on_its_weighted_totals() -> None:
    table = {"so 4": 0.9, "so 5": 0.1}
    result, backend, _ = await run_verified("weighted_vote", ["so 4"], table, {"method": "beta"})
    # 4 votes of 0.9 each count as 4 agreeing voters: 0.97 >= 0.95.
    assert [p.n for p in backend.sampled] == [4]
    assert result.stopped_early is not None and result.choices[0].content == "so 4"


def test_each_strategy_takes_its_own_rule() -> None:
    with pytest.raises(InvalidParamsError):
        parse_params(
            get_strategy("best_of_n"), {"verifier": "v", "early_stop": {"method": "beta"}}, CONTEXT
        )
    with pytest.raises(InvalidParamsError):
        parse_params(
            get_strategy("majority_vote"),
            {"early_stop": {"method": "score", "threshold": 1}},
            CONTEXT,
        )


@pytest.fixture
def groupings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many answers each grouping of the run grouped."""
    import strategies.answer_groups
    from verifiers.answer_match import group_answers

    calls: list[int] = []

    async def counted(answers: Any, pool: Any = None, exact: bool = False) -> Any:
        calls.append(len(answers))
        return await group_answers(answers, pool, exact=exact)

    monkeypatch.setattr(strategies.answer_groups, "group_answers", counted)
    return calls


async def test_a_settled_vote_groups_its_answers_once(groupings: list[int]) -> None:
    # The rule's ranking after the first wave is the vote's.
    await run(["it is 4"], 16, {"method": "beta"})
    assert groupings == [4]


async def test_progress_and_the_rule_share_each_waves_grouping(groupings: list[int]) -> None:
    lines: list[Any] = []

    async def sink(event: Any) -> None:
        lines.append(event)

    strategy = get_strategy("majority_vote")
    params = {"n": 12, "early_stop": {"method": "beta", "wave": 4}}
    parsed = parse_params(strategy, params, CONTEXT)
    backend = ScriptedBackend(["so 4", "so 5"])
    ctx = StrategyContext(backend=backend, request_id="r", sink=sink, is_progress_asked=True)
    await strategy.run(chat_request(), parsed, ctx)
    # One grouping per wave, for its progress line and (but the last) the rule; the vote
    # reuses the last.
    assert groupings == [4, 8, 12] and len(lines) == 3
