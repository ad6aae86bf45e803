"""Every registered strategy: result shape, exact usage, cancellation, params validation."""

from __future__ import annotations

import asyncio

import pytest

from server.backends.scripted import ScriptedBackend, tokenize
from strategies.base import InvalidParamsError, StrategyContext, UnknownStrategyError
from strategies.registry import STRATEGIES, get_strategy, parse_params
from tests.factories import chat_request

NAMES = sorted(STRATEGIES)


def test_names_match_registry_keys() -> None:
    for key, strategy in STRATEGIES.items():
        assert strategy.name == key
        module = type(strategy).__module__
        assert module == f"strategies.{key}"


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UnknownStrategyError) as info:
        get_strategy("nope")
    assert info.value.valid == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_unknown_params_are_rejected(name: str) -> None:
    with pytest.raises(InvalidParamsError) as info:
        parse_params(get_strategy(name), {"no_such_param": 1})
    assert info.value.param == "reasoning_params.no_such_param"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [1, 3])
async def test_usage_adds_up_to_every_generated_token(name: str, n: int) -> None:
    texts = ["step one\nAnswer: 4", "just 5", "six seven eight"]
    backend = ScriptedBackend(texts)
    strategy = get_strategy(name)
    ctx = StrategyContext(backend=backend, request_id="r")
    result = await strategy.run(chat_request(n=n), parse_params(strategy, None), ctx)
    assert len(result.choices) == n
    generated = sum(len(tokenize(t)) for t in texts[:n])
    assert result.usage.completion_tokens == generated
    assert result.usage.prompt_tokens > 0
    assert 0 <= result.reasoning_tokens <= generated
    assert all(c.finish_reason == "stop" for c in result.choices)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("streaming", [False, True])
async def test_cancelling_the_run_cancels_the_backend_call(name: str, streaming: bool) -> None:
    backend = ScriptedBackend(["slow"], delay_s=30)

    async def sink(delta: object) -> None:
        return None

    strategy = get_strategy(name)
    ctx = StrategyContext(backend=backend, request_id="r", sink=sink if streaming else None)
    task = asyncio.create_task(strategy.run(chat_request(), parse_params(strategy, None), ctx))
    while not backend.calls:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)
    assert ctx.usage.completion_tokens == 0
