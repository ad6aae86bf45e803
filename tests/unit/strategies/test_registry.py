"""Every registered strategy: result shape, exact usage, cancellation, params validation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backends.scripted import ScriptedBackend
from strategies.base import InvalidParamsError, ParamsContext, UnknownStrategyError
from strategies.context import StrategyContext
from strategies.registry import STRATEGIES, get_strategy, parse_params
from tests.factories import TableVerifier, chat_request
from verifiers.base import Verifier

NAMES = sorted(STRATEGIES)
TEXTS = ["step one\nAnswer: 4", "just 5", "six seven 8"]
SAMPLERS = {"majority_vote", "weighted_vote", "best_of_n"}
SEARCHES = {"beam_search", "dvts", "mcts", "particle_filtering"}
# The default verifiers of the sampling (confidence) and search (llm_judge) strategies.
PARAMS = ParamsContext(verifiers=frozenset({"confidence", "llm_judge"}))


def context(backend: ScriptedBackend, **fields: Any) -> StrategyContext:
    verifier = TableVerifier(dict.fromkeys([*TEXTS, "slow"], 0.5))
    verifiers: dict[str, Verifier] = {"confidence": verifier, "llm_judge": verifier}
    return StrategyContext(backend=backend, request_id="r", verifiers=verifiers, **fields)


def params_for(name: str) -> dict[str, Any] | None:
    if name in SAMPLERS:
        return {"n": 3}
    if name in ("beam_search", "dvts"):
        return {"n": 3, "beam_width": 1}
    if name == "auto":
        # A one-stage policy: its samples in one call, as the other samplers'.
        return {"policy": [{"samples": 3}]}
    return None


def test_names_match_registry_keys_and_modules() -> None:
    for key, strategy in STRATEGIES.items():
        assert strategy.name == key
        assert type(strategy).__module__ == f"strategies.{key}"


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UnknownStrategyError) as info:
        get_strategy("nope")
    assert info.value.valid == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_unknown_params_are_rejected(name: str) -> None:
    with pytest.raises(InvalidParamsError) as info:
        parse_params(get_strategy(name), {"no_such_param": 1}, PARAMS)
    assert info.value.param == "reasoning_params.no_such_param"


@pytest.mark.parametrize("name", NAMES)
async def test_usage_adds_up_to_every_generated_token(name: str) -> None:
    backend = ScriptedBackend(TEXTS)
    strategy = get_strategy(name)
    params = parse_params(strategy, params_for(name), PARAMS)
    request = chat_request(n=3 if name in ("none", "cot") else 1)
    result = await strategy.run(request, params, context(backend))
    assert len(result.choices) >= 1
    # Every token the backend generated is counted, and no other.
    assert backend.generated_tokens > 0
    assert result.usage.completion_tokens == backend.generated_tokens
    assert result.usage.prompt_tokens > 0
    assert 0 <= result.reasoning_tokens <= backend.generated_tokens
    if name not in SEARCHES:
        # Sampling is one call with n for all candidates.
        assert len(backend.calls) == 1 and backend.calls[0].params is not None
        assert backend.calls[0].params.n == 3
        assert all(c.finish_reason == "stop" for c in result.choices)
    scored = name in SEARCHES or name in ("weighted_vote", "best_of_n")
    assert (result.usage.verifier_tokens > 0) == scored


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("streaming", [False, True])
async def test_cancelling_the_run_cancels_the_backend_call(name: str, streaming: bool) -> None:
    backend = ScriptedBackend(["slow"], delay_s=30)

    async def sink(delta: object) -> None:
        return None

    strategy = get_strategy(name)
    ctx = context(backend, sink=sink if streaming else None)
    task = asyncio.create_task(
        strategy.run(chat_request(), parse_params(strategy, None, PARAMS), ctx)
    )
    while not backend.calls:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)
    assert ctx.usage.completion_tokens == 0
