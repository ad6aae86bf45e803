"""The strategy contract: a new strategy, one module and one registry line, whose params have
names no other strategy uses, is reserved for, traced and refused by the server from what it
declares (`StrategyParams.max_spend`, `is_trace_asked`, `is_progress_asked`, `takes_tools`,
`takes_json`), with nothing in server/ knowing its fields."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest
from pydantic import Field

from backends.scripted import ScriptedBackend
from strategies.base import (
    Choice,
    MaxSpend,
    StrategyParams,
    StrategyRequest,
    StrategyResult,
)
from strategies.context import StrategyContext
from strategies.limits import Limits
from strategies.registry import STRATEGIES
from tests.factories import app_client, chat_body, sse_events
from tests.unit.server.test_keys import auth, error_of, settings


class TallyParams(StrategyParams):
    """Fields named unlike any other strategy's."""

    draws: int = Field(default=3, ge=1)
    words_each: int = Field(default=7, ge=1)
    show_work: bool = False
    narrate: bool = False

    @property
    def is_trace_asked(self) -> bool:
        return self.show_work

    @property
    def is_progress_asked(self) -> bool:
        return self.narrate

    def max_spend(self, request: StrategyRequest, limits: Limits) -> MaxSpend:
        return self.spend_of(
            request,
            samples=self.draws,
            generated=self.draws * self.words_each,
            reads=self.draws * self.words_each,
            samples_param="reasoning_params.draws",
        )


class Tally:
    """Draws `draws` completions one by one and answers with the last."""

    name: ClassVar[str] = "tally"
    takes_tools: ClassVar[bool] = False
    takes_json: ClassVar[bool] = False
    takes_thinking: ClassVar[bool] = False
    params_model: ClassVar[type[StrategyParams]] = TallyParams

    async def run(
        self, request: StrategyRequest, params: TallyParams, ctx: StrategyContext
    ) -> StrategyResult:
        sampling = dataclasses.replace(request.sampling, n=1, max_tokens=params.words_each)
        text = ""
        for i in range(params.draws):
            await ctx.progress(f"draw {i + 1}")
            generation = await ctx.generate(request.prompt, sampling)
            text = generation.completions[0].text
        # What the server tells the run its verifiers may read, as `max_spend` declared it.
        trace = {"strategy": self.name, "draws": params.draws, "reads": ctx.reads}
        return StrategyResult((Choice(text, "stop", 1),), ctx.usage, trace=trace)


@pytest.fixture
def tally() -> Iterator[None]:
    registry = cast(dict[str, Any], STRATEGIES)
    registry["tally"] = Tally()
    yield
    del registry["tally"]


async def test_the_server_reserves_what_the_strategy_declares(tally: None, tmp_path: Path) -> None:
    # 4 draws of 7 tokens, read again by a verifier: 56 tokens, over a tpm of 50.
    chosen = settings(tmp_path, {"tpm": 50, "max_n": 5})
    async with app_client(ScriptedBackend(["4"]), settings=chosen) as client:
        over = await client.post(
            "/v1/chat/completions",
            json=chat_body(reasoning_strategy="tally", reasoning_params={"draws": 4}),
            headers=auth(),
        )
        too_many = await client.post(
            "/v1/chat/completions",
            json=chat_body(reasoning_strategy="tally", reasoning_params={"draws": 6}),
            headers=auth(),
        )
        fits = await client.post(
            "/v1/chat/completions",
            json=chat_body(reasoning_strategy="tally", reasoning_params={"draws": 3}),
            headers=auth(),
        )
    assert over.status_code == 429
    assert "may spend 56 tokens" in error_of(over)["message"]
    assert too_many.status_code == 429
    assert error_of(too_many)["param"] == "reasoning_params.draws"
    assert fits.status_code == 200


async def test_the_server_traces_and_streams_progress_as_declared(tally: None) -> None:
    async with app_client(ScriptedBackend(["4"])) as client:
        plain = await client.post(
            "/v1/chat/completions", json=chat_body(reasoning_strategy="tally")
        )
        traced = await client.post(
            "/v1/chat/completions",
            json=chat_body(reasoning_strategy="tally", reasoning_params={"show_work": True}),
        )
        streamed = await client.post(
            "/v1/chat/completions",
            json=chat_body(
                reasoning_strategy="tally", reasoning_params={"narrate": True}, stream=True
            ),
        )
    assert "reasoning_trace" not in plain.json()
    assert traced.json()["reasoning_trace"] == {"strategy": "tally", "draws": 3, "reads": 3 * 7}
    deltas = [e["choices"][0]["delta"] for e in sse_events(streamed.text)[:-1] if e["choices"]]
    progress = [d["reasoning"] for d in deltas if d.get("reasoning")]
    assert progress == ["draw 1\n", "draw 2\n", "draw 3\n"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ("response_format", {"type": "json_object"}),
    ],
)
async def test_the_server_refuses_what_the_strategy_cannot_answer(
    tally: None, field: str, value: Any
) -> None:
    async with app_client(ScriptedBackend(["4"])) as client:
        refused = await client.post(
            "/v1/chat/completions", json=chat_body(reasoning_strategy="tally", **{field: value})
        )
    assert refused.status_code == 400
    assert error_of(refused)["param"] == field
    assert "'tally'" in error_of(refused)["message"]


async def test_auto_reserves_what_its_policy_can_draw(tmp_path: Path) -> None:
    # The default policy draws up to 16 samples: a key allowing 8 refuses it, naming the policy.
    chosen = settings(tmp_path, {"max_n": 8})
    async with app_client(ScriptedBackend(["4"]), settings=chosen) as client:
        default = await client.post(
            "/v1/chat/completions", json=chat_body(reasoning_strategy="auto"), headers=auth()
        )
        small = await client.post(
            "/v1/chat/completions",
            json=chat_body(
                reasoning_strategy="auto",
                reasoning_params={"policy": [{"samples": 4, "stop_at": 2}, {"samples": 8}]},
            ),
            headers=auth(),
        )
    assert default.status_code == 429
    assert error_of(default)["param"] == "reasoning_params.policy"
    assert small.status_code == 200
