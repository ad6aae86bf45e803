"""`auto` end to end: the openai client, a real gateway and the embedded model."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.e2e.conftest import MAX_N, MODEL
from tests.e2e.test_sampling import QUESTION, trace_of

pytestmark = pytest.mark.e2e


async def ask(client: openai.AsyncOpenAI, temperature: float, **params: Any) -> Any:
    return await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=24,
        temperature=temperature,
        seed=11,
        extra_body={
            "reasoning_strategy": "auto",
            "reasoning_params": {"return_trace": True, "answer_format": "last_number", **params},
        },
    )


async def test_agreeing_samples_stop_after_the_first_stage(client: openai.AsyncOpenAI) -> None:
    # Greedy samples all agree: the first stage of 4 answers, the rest is never drawn.
    response = await ask(client, temperature=0)
    trace = trace_of(response)
    assert trace["strategy"] == "auto"
    assert trace["auto"]["path"] == "stopped at stage 1"
    assert len(trace["candidates"]) == 4
    # The default policy, cut to this server's max_n of 8.
    assert [s["samples"] for s in trace["auto"]["policy"]] == [4, MAX_N]
    stopped = (response.model_extra or {}).get("reasoning_stopped_early")
    assert stopped == "auto: 4 of 4 samples agree (stage 1 stops at 2)"
    usage = response.usage
    assert usage is not None
    assert usage.completion_tokens == sum(c["tokens"] for c in trace["candidates"])


async def test_the_trace_tells_the_path_the_samples_took(client: openai.AsyncOpenAI) -> None:
    # Sampled hot, the model may or may not agree; whichever path, the trace must explain it.
    policy = [{"samples": 2, "stop_at": 2}, {"samples": 4, "stop_at": 3}, {"samples": 8}]
    response = await ask(client, temperature=1.2, policy=policy)
    trace = trace_of(response)
    stages = trace["auto"]["stages"]
    assert [s["samples"] for s in stages] == [2, 4, 8][: len(stages)]
    assert len(trace["candidates"]) == stages[-1]["samples"]
    for stage, rule in zip(stages[:-1], policy, strict=False):
        # Every stage the run went past had too few votes for its leader.
        assert max(stage["votes"].values(), default=0) < rule["stop_at"]
    last = stages[-1]
    if len(stages) < 3:
        assert max(last["votes"].values()) >= policy[len(stages) - 1]["stop_at"]
        assert trace["auto"]["path"] == f"stopped at stage {len(stages)}"
    else:
        assert trace["auto"]["path"] == "majority vote"
    assert trace["votes"] == last["votes"]
    assert response.usage is not None
    assert response.usage.completion_tokens == sum(c["tokens"] for c in trace["candidates"])


async def test_a_policy_over_the_servers_limit_is_a_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await ask(client, temperature=0.7, policy=[{"samples": 4}, {"samples": 2 * MAX_N}])
    assert info.value.body is not None
    assert "reasoning_params" in str(info.value)
    assert f"at most {MAX_N}" in str(info.value)
