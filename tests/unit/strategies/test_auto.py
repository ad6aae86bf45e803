"""`auto` on scripted candidates: each path of the staged policy, exactly, and its params."""

from __future__ import annotations

from typing import Any

import pytest

from backends.scripted import ScriptedBackend
from strategies.auto import POLICY, AutoParams, Stage
from strategies.base import InvalidParamsError, ParamsContext, StrategyResult
from strategies.budget import Allowance
from strategies.context import StrategyContext
from strategies.limits import Limits
from strategies.registry import get_strategy, parse_params
from tests.factories import TableVerifier, chat_request
from verifiers.base import Verifier, VerifierError

PLAIN = ParamsContext(verifiers=frozenset({"judge"}), limits=Limits(max_n=16))
WITH_PRM = ParamsContext(
    verifiers=frozenset({"judge", "prm"}), prms=frozenset({"prm"}), limits=Limits(max_n=16)
)


async def run(
    texts: list[str],
    params: dict[str, Any] | None = None,
    context: ParamsContext = PLAIN,
    verifiers: dict[str, Verifier] | None = None,
    **sampling: Any,
) -> tuple[StrategyResult, ScriptedBackend]:
    backend = ScriptedBackend(texts)
    strategy = get_strategy("auto")
    parsed = parse_params(strategy, {"return_trace": True, **(params or {})}, context)
    ctx = StrategyContext(backend=backend, request_id="r", verifiers=verifiers or {})
    ctx.budget = Allowance.of(parsed.budget, ctx.usage, ctx.price)
    sampling.setdefault("seed", 100)
    return await strategy.run(chat_request(**sampling), parsed, ctx), backend


def waves(backend: ScriptedBackend) -> list[tuple[int | None, int]]:
    return [(p.seed, p.n) for p in backend.sampled]


def test_the_default_policy_is_the_tuned_one() -> None:
    assert POLICY == (Stage(samples=4, stop_at=2), Stage(samples=8, stop_at=5), Stage(samples=16))


@pytest.mark.parametrize(
    ("max_n", "samples"), [(64, [4, 8, 16]), (16, [4, 8, 16]), (8, [4, 8]), (6, [4, 6]), (2, [2])]
)
def test_the_default_policy_fits_the_servers_max_n(max_n: int, samples: list[int]) -> None:
    parsed = parse_params(get_strategy("auto"), {}, ParamsContext(limits=Limits(max_n=max_n)))
    assert isinstance(parsed, AutoParams)
    assert [s.samples for s in parsed.policy] == samples
    # The last stage always votes on everything drawn.
    assert parsed.policy[-1].stop_at is None
    assert parsed.policy[:-1] == POLICY[: len(samples) - 1]


async def test_an_answer_repeated_in_the_first_four_stops_after_the_first_call() -> None:
    result, backend = await run(["it is 4", "so 4", "maybe 5", "4 again"] + ["7"] * 12)
    assert waves(backend) == [(100, 4)]
    assert result.choices[0].content == "it is 4"
    assert result.stopped_early == "auto: 3 of 4 samples agree (stage 1 stops at 2)"
    assert result.trace is not None
    assert result.trace["auto"]["path"] == "stopped at stage 1"
    assert result.trace["auto"]["stages"] == [
        {"samples": 4, "votes": {"4": 3.0, "5": 1.0}, "stop_at": 2}
    ]
    # 12 samples not drawn, at the 9 / 4 tokens each the drawn ones took.
    assert result.usage.completion_tokens == 9
    assert result.trace["samples"] == {"requested": 16, "drawn": 4, "tokens_saved": 27}


async def test_five_of_eight_agreeing_stop_after_the_second_call() -> None:
    texts = ["a 1", "b 2", "c 3", "d 4", "e 2", "f 2", "g 2", "h 2"] + ["9"] * 8
    result, backend = await run(texts)
    # The second wave is seeded after the first's four samples.
    assert waves(backend) == [(100, 4), (104, 4)]
    assert result.choices[0].content == "b 2"
    assert result.trace is not None
    assert [s["votes"] for s in result.trace["auto"]["stages"]] == [
        {"1": 1.0, "2": 1.0, "3": 1.0, "4": 1.0},
        {"2": 5.0, "1": 1.0, "3": 1.0, "4": 1.0},
    ]
    assert result.stopped_early == "auto: 5 of 8 samples agree (stage 2 stops at 5)"


async def test_no_agreement_draws_all_sixteen_in_three_calls_and_votes() -> None:
    texts = ["1", "2", "3", "4", "1", "2", "3", "5", "6", "6", "6", "6", "7", "8", "9", "6"]
    result, backend = await run(texts)
    assert waves(backend) == [(100, 4), (104, 4), (108, 8)]
    assert result.choices[0].content == "6"
    assert result.stopped_early is None
    assert result.trace is not None
    assert result.trace["auto"]["path"] == "majority vote"
    assert result.trace["auto"]["stage"] == 3
    assert result.trace["samples"]["drawn"] == 16


async def test_with_a_prm_the_last_stage_is_a_weighted_vote_in_one_verifier_call() -> None:
    texts = ["1", "2", "3", "4", "1", "2", "3", "5", "6", "6", "6", "6", "7", "8", "9", "6"]
    # The majority (6, five votes) scores low; 1 (two votes) scores high.
    scores = {t: 0.1 for t in texts} | {"1": 0.9}
    prm = TableVerifier(scores)
    result, backend = await run(texts, context=WITH_PRM, verifiers={"prm": prm})
    assert waves(backend) == [(100, 4), (104, 4), (108, 8)]
    assert len(prm.calls) == 1 and len(prm.calls[0][1]) == 16
    assert result.choices[0].content == "1"
    assert result.usage.verifier_tokens == 160
    assert result.trace is not None
    assert result.trace["auto"]["path"] == "weighted vote by prm"
    assert result.trace["votes"]["1"] == pytest.approx(1.8)


async def test_a_prm_is_not_asked_when_the_model_agrees() -> None:
    prm = TableVerifier({})
    result, _ = await run(["4", "4", "4", "5"], context=WITH_PRM, verifiers={"prm": prm})
    assert prm.calls == []
    assert result.usage.verifier_tokens == 0


async def test_a_failing_prm_leaves_the_majority_vote_and_says_so() -> None:
    texts = ["1", "2", "3", "4", "1", "2", "3", "5", "6", "6", "6", "6", "7", "8", "9", "6"]
    prm = TableVerifier({}, error=VerifierError("down"))
    result, _ = await run(texts, context=WITH_PRM, verifiers={"prm": prm})
    assert result.choices[0].content == "6"
    assert result.fallback is not None and "'prm' failed (down)" in result.fallback
    assert result.trace is not None
    assert result.trace["auto"]["path"] == "majority vote (the verifier failed)"


async def test_a_named_verifier_replaces_the_prm() -> None:
    texts = ["1", "2", "3", "4", "1", "2", "3", "5", "6", "6", "6", "6", "7", "8", "9", "6"]
    judge = TableVerifier({t: 0.1 for t in texts} | {"2": 0.9})
    result, _ = await run(
        texts, {"verifier": "judge"}, context=WITH_PRM, verifiers={"judge": judge}
    )
    assert result.choices[0].content == "2"
    assert len(judge.calls) == 1


async def test_a_policy_given_replaces_the_default() -> None:
    policy = [{"samples": 2, "stop_at": 2}, {"samples": 6}]
    result, backend = await run(["3", "4", "4", "4", "5", "5"], {"policy": policy})
    assert waves(backend) == [(100, 2), (102, 4)]
    assert result.choices[0].content == "4"


async def test_a_spent_budget_stops_before_the_next_stage() -> None:
    # Two tokens each: the first stage's 8 tokens spend a budget of 8.
    result, backend = await run(
        ["a 1", "b 2", "c 3", "d 4"] + ["e 5"] * 12, {"budget": {"tokens": 8}}
    )
    assert waves(backend) == [(100, 4)]
    assert result.stopped_early is not None
    assert result.stopped_early.startswith("token budget reached")
    assert result.trace is not None
    assert result.trace["auto"]["path"] == "budget spent after stage 1"


@pytest.mark.parametrize(
    ("params", "param", "message"),
    [
        ({"n": 4}, "reasoning_params", "give policy instead of n"),
        ({"policy": []}, "reasoning_params", "at least one stage"),
        ({"policy": [{"samples": 4}, {"samples": 4}]}, "reasoning_params", "more than 4"),
        ({"policy": [{"samples": 4, "stop_at": 5}]}, "reasoning_params", "more votes"),
        ({"policy": [{"samples": 32}]}, "reasoning_params", "at most 16"),
        ({"policy": [{"samples": 0}]}, "reasoning_params.policy.0.samples", "greater than"),
        ({"policy": [{"samples": 4, "when": 1}]}, "reasoning_params.policy.0.when", "Extra"),
        ({"verifier": "nope"}, "reasoning_params", "unknown verifier 'nope'"),
    ],
)
def test_bad_params_are_400s_that_name_them(
    params: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(InvalidParamsError) as info:
        parse_params(get_strategy("auto"), params, PLAIN)
    assert info.value.param == param
    assert message in str(info.value)


def test_the_prm_is_found_by_kind_and_named_verifiers_win() -> None:
    def verifier(params: dict[str, Any], context: ParamsContext) -> str | None:
        parsed = parse_params(get_strategy("auto"), params, context)
        assert isinstance(parsed, AutoParams)
        return parsed.verifier

    assert verifier({}, WITH_PRM) == "prm"
    assert verifier({}, PLAIN) is None
    assert verifier({"verifier": "judge"}, WITH_PRM) == "judge"
