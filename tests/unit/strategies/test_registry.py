"""Every registered strategy: result shape, exact usage, cancellation, params validation."""

from __future__ import annotations

import asyncio

import pytest

from server.backends.scripted import ScriptedBackend, tokenize
from strategies.base import (
    InvalidParamsError,
    ParamsContext,
    StrategyContext,
    UnknownStrategyError,
)
from strategies.registry import STRATEGIES, get_strategy, parse_params
from tests.factories import TableVerifier, chat_request

NAMES = sorted(STRATEGIES)
TEXTS = ["step one\nAnswer: 4", "just 5", "six seven 8"]
PARAMS = ParamsContext(verifiers=frozenset({"confidence"}))


def context(backend: ScriptedBackend, **fields: object) -> StrategyContext:
    verifier = TableVerifier(dict.fromkeys(TEXTS, 0.5) | {"slow": 0.5})
    return StrategyContext(
        backend=backend, request_id="r", verifiers={"confidence": verifier}, **fields
    )  # type: ignore[arg-type]


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
    params = parse_params(strategy, {"n": 3} if name in SAMPLERS else None, PARAMS)
    n = 3 if name in SAMPLERS else 1
    request = chat_request(n=1 if name in SAMPLERS else 3)
    ctx = context(backend)
    result = await strategy.run(request, params, ctx)
    assert len(result.choices) >= 1
    generated = sum(len(tokenize(t)) for t in TEXTS[:3])
    assert result.usage.completion_tokens == generated
    assert result.usage.prompt_tokens > 0
    assert 0 <= result.reasoning_tokens <= generated
    assert len(backend.calls) == 1 and backend.calls[0].params is not None
    assert backend.calls[0].params.n == 3
    assert all(c.finish_reason == "stop" for c in result.choices)
    if name in ("weighted_vote", "best_of_n"):
        assert result.usage.verifier_tokens == 30
    else:
        assert result.usage.verifier_tokens == 0
    del n


SAMPLERS = {"majority_vote", "weighted_vote", "best_of_n"}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("streaming", [False, True])
async def test_cancelling_the_run_cancels_the_backend_call(name: str, streaming: bool) -> None:
    backend = ScriptedBackend(["slow"], delay_s=30)

    async def sink(delta: object) -> None:
        return None

    strategy = get_strategy(name)
    ctx = context(backend, sink=sink if streaming else None)
    params = parse_params(strategy, None, PARAMS)
    task = asyncio.create_task(strategy.run(chat_request(), params, ctx))
    while not backend.calls:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)
    assert ctx.usage.completion_tokens == 0
