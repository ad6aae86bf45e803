"""bench/replay.py gives what the served rules give: the same samples, the same decisions."""

from __future__ import annotations

from typing import Any

import pytest

from backends.scripted import ScriptedBackend, tokenize
from bench.replay import ReplayBackend, Stored, replay
from strategies.base import ParamsContext
from strategies.context import StrategyContext
from strategies.limits import Limits
from strategies.registry import get_strategy, parse_params
from tests.factories import chat_request

TEXTS = ["so 3", "it is 4", "4", "maybe 5", "5", "4 it is", "4", "then 4"] + ["6"] * 8
ROWS = [
    ("majority_vote", {"n": 4}),
    ("majority_vote", {"n": 16}),
    ("majority_vote", {"n": 16, "early_stop": {"method": "beta"}}),
    ("majority_vote", {"n": 16, "early_stop": {"method": "margin"}}),
    ("auto", {}),
]


@pytest.mark.parametrize(("strategy", "params"), ROWS, ids=lambda v: str(v))
async def test_a_replay_decides_as_the_strategy_on_a_backend_does(
    strategy: str, params: dict[str, Any]
) -> None:
    stored = [Stored(t, len(tokenize(t))) for t in TEXTS]
    replayed = await replay(strategy, params, [("user", "What is 2 + 2?")], stored, 40, 32, 0.7)
    # The same rules, served by the scripted backend, which hands out the texts in order.
    backend = ScriptedBackend(TEXTS)
    chosen = get_strategy(strategy)
    parsed = parse_params(
        chosen, {**params, "return_trace": True}, ParamsContext(limits=Limits(max_n=16))
    )
    ctx = StrategyContext(backend=backend, request_id="r")
    served = await chosen.run(chat_request(seed=40, max_tokens=32), parsed, ctx)
    assert replayed.content == served.choices[0].content
    assert replayed.completion_tokens == served.usage.completion_tokens
    assert replayed.drawn == sum(p.n for p in backend.sampled)
    assert replayed.stopped_early == served.stopped_early


async def test_the_replay_serves_each_wave_from_its_seed() -> None:
    backend = ReplayBackend([Stored(str(i), 1) for i in range(16)], first_seed=40, max_tokens=32)
    request = chat_request(seed=48, n=4, max_tokens=32)
    generation = await backend.generate(request.prompt, request.sampling)
    assert [c.text for c in generation.completions] == ["8", "9", "10", "11"]
    assert backend.waves == [(8, 4)]
    with pytest.raises(ValueError, match="not stored"):
        await backend.generate(request.prompt, chat_request(seed=54, n=4).sampling)
