"""`reasoning_params.budget` on scripted candidates and steps: what each strategy draws within
it, what it reports, and how its limits are checked."""

from __future__ import annotations

from typing import Any

import pytest

from backends.base import TokenLogprob
from backends.scripted import ScriptedBackend
from strategies.accounting import ModelPrice
from strategies.base import InvalidParamsError, ParamsContext, StrategyResult
from strategies.budget import Allowance, OutOfTime
from strategies.context import StrategyContext
from strategies.limits import Limits
from strategies.registry import get_strategy, parse_params
from tests.factories import TableVerifier, chat_request
from tests.unit.strategies.test_search import PathPRM, children

# A dollar per thousand generated or verifier tokens, nothing for the prompt.
PRICE = ModelPrice(completion=1000.0, verifier=1000.0)
CONTEXT = ParamsContext(verifiers=frozenset({"v", "prm"}), limits=Limits(max_n=16), price=PRICE)

# Four tokens each, as the scripted backend counts them: "the", " answer", " is", " 4".
FOUR_TOKENS = "the answer is 4"


async def run(
    name: str,
    params: dict[str, Any],
    backend: ScriptedBackend,
    verifiers: dict[str, Any] | None = None,
    price: ModelPrice | None = None,
    **sampling: Any,
) -> StrategyResult:
    strategy = get_strategy(name)
    traced = {} if name in ("none", "cot") else {"return_trace": True}
    parsed = parse_params(strategy, {**traced, **params}, CONTEXT)
    ctx = StrategyContext(backend=backend, request_id="r", verifiers=verifiers or {}, price=price)
    # What the server does before a run.
    ctx.budget = Allowance.of(parsed.budget, ctx.usage, ctx.price)
    return await strategy.run(chat_request(**sampling), parsed, ctx)


async def test_a_vote_draws_what_the_token_budget_affords_at_max_tokens_then_at_cost() -> None:
    backend = ScriptedBackend([FOUR_TOKENS])
    result = await run("majority_vote", {"n": 16, "budget": {"tokens": 30}}, backend, max_tokens=8)
    # 30 tokens afford 3 candidates of up to 8; they took 4 each (12), so 18 left afford 4
    # more; then 2 tokens are left, less than one candidate's 4.
    assert [p.n for p in backend.sampled] == [3, 4]
    assert result.usage.completion_tokens == 28
    assert result.stopped_early is not None
    assert result.stopped_early.startswith("token budget reached (2 tokens left")
    assert result.trace is not None
    assert result.trace["samples"] == {"requested": 16, "drawn": 7, "tokens_saved": 36}
    assert result.tokens_saved == 36
    assert (result.drawn, result.allowed, result.stop) == (7, 16, "budget")


async def test_a_budget_that_affords_everything_is_one_call() -> None:
    backend = ScriptedBackend([FOUR_TOKENS])
    result = await run("majority_vote", {"n": 8, "budget": {"tokens": 1000}}, backend)
    assert [p.n for p in backend.sampled] == [8]
    assert result.stopped_early is None and result.tokens_saved == 0


async def test_a_budget_below_one_candidate_still_draws_one_cut_to_it() -> None:
    backend = ScriptedBackend([FOUR_TOKENS])
    result = await run("majority_vote", {"n": 8, "budget": {"tokens": 2}}, backend)
    assert [(p.n, p.max_tokens) for p in backend.sampled] == [(1, 2)]
    assert result.choices[0].content == "the answer"
    assert result.choices[0].finish_reason == "length"
    assert result.usage.completion_tokens == 2


def confident(token: str, k: int) -> TokenLogprob:
    """Every token equally confident: DeepConf keeps every trace, so only the budget stops."""
    return TokenLogprob(token, -0.1, (("alt", -2.0),) * k)


async def test_deepconf_streams_only_the_traces_the_token_budget_affords() -> None:
    backend = ScriptedBackend([FOUR_TOKENS], token_logprob=confident)
    params = {"n": 12, "early_stop": {"method": "deepconf"}, "budget": {"tokens": 40}}
    result = await run("majority_vote", params, backend, max_tokens=8)
    # The warm-up's 4 traces of up to 8 tokens fit in 40 and took 16; the 24 left afford six
    # more at 4 each, reserved as they all start at once, and not a seventh.
    calls = [(c.method, c.params.n if c.params else 0) for c in backend.calls]
    assert calls == [("generate", 4)] + [("stream", 1)] * 6
    assert result.usage.completion_tokens == 40
    assert result.stopped_early == (
        "deepconf: token budget reached (24 tokens left, 24 of them for the traces in flight; "
        "a trace takes about 4)"
    )
    assert (result.drawn, result.allowed, result.stop) == (10, 12, "budget")


async def test_deepconf_warms_up_with_what_the_budget_affords() -> None:
    backend = ScriptedBackend([FOUR_TOKENS], token_logprob=confident)
    params = {"n": 8, "early_stop": {"method": "deepconf"}, "budget": {"tokens": 3}}
    result = await run("majority_vote", params, backend, max_tokens=8)
    # Not one trace of up to 8 fits in 3: one is drawn, cut to the 3 tokens left.
    assert [(p.n, p.max_tokens) for p in backend.sampled] == [(1, 3)]
    assert result.usage.completion_tokens == 3
    assert result.stopped_early is not None and "token budget reached" in result.stopped_early


async def test_verifier_tokens_count_against_the_budget() -> None:
    backend = ScriptedBackend([FOUR_TOKENS])
    verifier = TableVerifier({FOUR_TOKENS: 0.5}, tokens_per_candidate=6)
    result = await run(
        "best_of_n",
        {"n": 16, "verifier": "v", "budget": {"tokens": 40}},
        backend,
        {"v": verifier},
        max_tokens=4,
    )
    # A candidate costs its 4 tokens and the verifier's reading of it, with the question of 14
    # characters (5 tokens at 3 characters a token): 40 afford 3 at 4 + 5 + 4. Reading them
    # took 6 each, so 30 are spent, and the 10 left afford no fourth. (It drew 10 and spent
    # 100 before the verifier's reading was counted before its call.)
    assert [p.n for p in backend.sampled] == [3]
    assert len(verifier.calls) == 1
    assert result.usage.completion_tokens + result.usage.verifier_tokens == 30
    assert result.stopped_early is not None and "token budget reached" in result.stopped_early


async def test_a_dollar_budget_spends_at_the_models_price() -> None:
    backend = ScriptedBackend([FOUR_TOKENS])
    # $0.02 is 20 tokens at $1 per thousand: 2 candidates of 8, then 12 left afford 3 of 4.
    result = await run(
        "majority_vote", {"n": 16, "budget": {"usd": 0.02}}, backend, price=PRICE, max_tokens=8
    )
    assert [p.n for p in backend.sampled] == [2, 3]
    assert result.stopped_early is not None
    assert result.stop == "budget"


async def test_a_time_budget_draws_in_waves_and_stops_between_them() -> None:
    backend = ScriptedBackend([FOUR_TOKENS], delay_s=0.2)
    result = await run("majority_vote", {"n": 16, "budget": {"seconds": 0.3}}, backend)
    # Waves of 4, the clock checked between them: the third wave would start after 0.4 s.
    waves = [p.n for p in backend.sampled]
    assert waves in ([4], [4, 4])
    assert result.stopped_early == "time budget reached (0.3 s)"
    assert result.stop == "deadline"


async def test_one_call_strategies_cut_max_tokens_to_the_budget() -> None:
    backend = ScriptedBackend([FOUR_TOKENS])
    result = await run("none", {"budget": {"tokens": 6}}, backend, n=2, max_tokens=64)
    assert [p.max_tokens for p in backend.sampled] == [3]
    assert result.usage.completion_tokens == 6
    assert result.stopped_early == "token budget: max_tokens cut from 64 to 3 per completion"


@pytest.mark.parametrize("name", ["beam_search", "dvts", "mcts"])
async def test_a_search_overshoots_its_token_budget_by_at_most_a_token_per_step(
    name: str,
) -> None:
    backend, prm = ScriptedBackend(children), PathPRM()
    size = {"k": 4} if name == "mcts" else {"n": 4}
    result = await run(
        name, {"verifier": "prm", **size, "budget": {"tokens": 60}}, backend, {"prm": prm}
    )
    spent = result.usage.completion_tokens + result.usage.verifier_tokens
    widest = max(p.n for p in backend.sampled)
    # Steps are cut to leave room for their reading, so the PRM is called and paid for.
    assert prm.calls
    assert spent <= 60 + widest
    assert result.stopped_early is not None and "token budget reached" in result.stopped_early
    assert result.choices[0].content


async def test_max_search_tokens_cuts_the_last_step_to_what_is_left() -> None:
    backend = ScriptedBackend(children)
    result = await run(
        "beam_search",
        {"verifier": "prm", "n": 4, "max_search_tokens": 20},
        backend,
        {"prm": PathPRM()},
    )
    # Generated tokens only, as before budgets: never more than the cap plus one per child.
    assert 20 <= result.usage.completion_tokens <= 24


async def test_a_search_out_of_time_in_its_first_step_answers_with_that_step() -> None:
    backend = ScriptedBackend(children, delay_s=0.3)
    result = await run(
        "mcts", {"verifier": "prm", "max_search_seconds": 0.1}, backend, {"prm": PathPRM()}
    )
    assert result.choices[0].content.startswith("s0")
    assert result.stopped_early == "time budget reached (0.1 s)"
    assert result.stop == "deadline"


def test_budget_limits_are_checked() -> None:
    limits = Limits(
        search_default_tokens=100,
        search_max_tokens=100,
        search_default_seconds=60,
        search_max_seconds=60,
    )
    context = ParamsContext(verifiers=frozenset({"prm"}), limits=limits)
    strategy = get_strategy("majority_vote")
    with pytest.raises(
        InvalidParamsError, match="budget.tokens is 101; this server allows at most 100"
    ) as caught:
        parse_params(strategy, {"budget": {"tokens": 101}}, context)
    assert caught.value.param == "reasoning_params.budget.tokens"
    with pytest.raises(InvalidParamsError, match="at most 60"):
        parse_params(get_strategy("mcts"), {"verifier": "prm", "budget": {"seconds": 61}}, context)
    with pytest.raises(InvalidParamsError, match="needs the model's price") as caught:
        parse_params(strategy, {"budget": {"usd": 0.5}}, context)
    assert caught.value.param == "reasoning_params.budget.usd"
    with pytest.raises(InvalidParamsError, match="budget.watts"):
        parse_params(strategy, {"budget": {"watts": 3}}, context)
    # Every strategy takes one, `none` included.
    parse_params(get_strategy("none"), {"budget": {"tokens": 100}}, context)


@pytest.mark.parametrize("name", ["none", "cot"])
async def test_a_one_call_strategy_out_of_time_is_a_clear_timeout(name: str) -> None:
    backend = ScriptedBackend([FOUR_TOKENS], delay_s=0.5)
    with pytest.raises(OutOfTime, match=f"before {name}'s one call finished"):
        await run(name, {"budget": {"seconds": 0.05}}, backend)


async def test_a_search_stops_where_its_reading_would_pass_what_it_declared() -> None:
    backend, prm = ScriptedBackend(children), PathPRM()
    strategy = get_strategy("beam_search")
    parsed = parse_params(strategy, {"verifier": "prm", "n": 4, "return_trace": True}, CONTEXT)
    ctx = StrategyContext(backend=backend, request_id="r", verifiers={"prm": prm}, reads=30)
    result = await strategy.run(chat_request(), parsed, ctx)
    # Four paths with the question cost about 4 x (5 + 1) to read: the second step's would
    # pass 30, so the search stops after one, with the best path it scored.
    assert len(prm.calls) == 1
    assert result.stopped_early is not None
    assert result.stopped_early.startswith("verifier reading reached: 'prm' not called")
    assert result.stop == "verifier_reading"
    assert result.choices[0].content


async def test_a_vote_whose_reading_is_refused_answers_by_majority_and_says_so() -> None:
    backend = ScriptedBackend([FOUR_TOKENS])
    verifier = TableVerifier({FOUR_TOKENS: 0.5})
    strategy = get_strategy("best_of_n")
    # Refused reading is no verifier failure: the vote answers although errors were asked for.
    parsed = parse_params(
        strategy, {"n": 4, "verifier": "v", "on_verifier_error": "error"}, CONTEXT
    )
    ctx = StrategyContext(backend=backend, request_id="r", verifiers={"v": verifier}, reads=10)
    result = await strategy.run(chat_request(), parsed, ctx)
    assert verifier.calls == []
    assert result.fallback is not None
    assert result.fallback.startswith("verifier reading reached: 'v' not called")
    assert result.fallback.endswith("answered by majority vote")
    assert result.stop == "verifier_reading"
    assert result.choices[0].content == FOUR_TOKENS
