"""Sampling strategies end to end: the openai client, a real gateway, the embedded model and
its out-of-the-box verifiers (llm_judge and confidence)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e

SYSTEM = "Think step by step, then give the final answer as a number."
QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "What is 3 + 5?"},
]


def trace_of(response: Any) -> dict[str, Any]:
    trace = (response.model_extra or {}).get("reasoning_trace")
    assert isinstance(trace, dict)
    return trace


async def test_majority_vote_answers_with_the_largest_group(client: openai.AsyncOpenAI) -> None:
    response = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=40,
        temperature=0.8,
        seed=3,
        extra_body={
            "reasoning_strategy": "majority_vote",
            "reasoning_params": {"n": 8, "return_trace": True, "answer_format": "last_number"},
        },
    )
    trace = trace_of(response)
    candidates = trace["candidates"]
    assert trace["strategy"] == "majority_vote" and len(candidates) == 8
    answers = [c["answer"] for c in candidates if c["answer"] is not None]
    assert answers, "SmolLM2 should state some number"
    counts = Counter(trace["votes"]).most_common()
    assert counts[0][1] == max(trace["votes"].values())
    # The returned message is a candidate whose answer is in the top group.
    content = response.choices[0].message.content
    winner = next(c for c in candidates if c["text"] == content)
    assert trace["answer"] == winner["answer"]
    assert trace["votes"][trace["answer"]] == max(trace["votes"].values())
    # Usage counts all eight candidates; the seven not returned are reasoning tokens.
    usage = response.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens == sum(c["tokens"] for c in candidates)
    assert (
        usage.completion_tokens_details.reasoning_tokens
        == usage.completion_tokens - winner["tokens"]
    )


async def test_best_of_n_with_the_llm_judge(client: openai.AsyncOpenAI) -> None:
    response = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=24,
        temperature=0.8,
        extra_body={
            "reasoning_strategy": "best_of_n",
            "reasoning_params": {"n": 4, "verifier": "llm_judge", "return_trace": True},
        },
    )
    trace = trace_of(response)
    scores = [c["score"] for c in trace["candidates"]]
    assert all(0.0 <= s <= 1.0 for s in scores)
    best = max(range(4), key=lambda i: (scores[i], -i))
    assert response.choices[0].message.content == trace["candidates"][best]["text"]
    assert response.usage is not None
    verifier_tokens = (response.usage.model_extra or {}).get("verifier_tokens")
    assert isinstance(verifier_tokens, int) and verifier_tokens > 0


async def test_weighted_vote_with_confidence_streams_the_trace(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=24,
        temperature=0.8,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={
            "reasoning_strategy": "weighted_vote",
            "reasoning_params": {"n": 4, "verifier": "confidence", "return_trace": True},
        },
    )
    content, trace, usage = "", None, None
    async for chunk in stream:
        trace = (chunk.model_extra or {}).get("reasoning_trace") or trace
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
    assert trace is not None and trace["strategy"] == "weighted_vote"
    scores = [c["score"] for c in trace["candidates"]]
    assert all(0.0 < s <= 1.0 for s in scores)
    assert content in [c["text"] for c in trace["candidates"]]
    assert usage is not None and usage.completion_tokens == sum(
        c["tokens"] for c in trace["candidates"]
    )


async def test_unknown_verifier_is_400_listing_configured(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            extra_body={"reasoning_strategy": "best_of_n", "reasoning_params": {"verifier": "prm"}},
        )
    assert "confidence" in str(info.value) and "llm_judge" in str(info.value)


async def test_early_stopped_vote_answers_after_one_agreeing_wave(
    client: openai.AsyncOpenAI,
) -> None:
    # Greedy samples agree, so the first wave of 4 settles the vote and 4 are never drawn.
    response = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=24,
        temperature=0,
        extra_body={
            "reasoning_strategy": "majority_vote",
            "reasoning_params": {
                "n": 8,
                "return_trace": True,
                "answer_format": "regex",
                "answer_pattern": r"(\S+)",
                "early_stop": {"method": "beta", "wave": 4},
            },
        },
    )
    trace = trace_of(response)
    assert len(trace["candidates"]) == 4
    extras = response.model_extra or {}
    assert extras["reasoning_stopped_early"] == "early_stop: beta rule settled after 4 of 8"
    usage = response.usage
    assert usage is not None
    assert usage.completion_tokens == sum(c["tokens"] for c in trace["candidates"])


async def test_a_token_budget_draws_fewer_candidates_and_says_so(
    client: openai.AsyncOpenAI,
) -> None:
    # 30 tokens afford one candidate of up to 16 at first; the rest by what it cost.
    response = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=16,
        temperature=0.8,
        seed=5,
        extra_body={
            "reasoning_strategy": "majority_vote",
            "reasoning_params": {"n": 8, "return_trace": True, "budget": {"tokens": 30}},
        },
    )
    trace = trace_of(response)
    usage = response.usage
    assert usage is not None
    drawn = trace["samples"]["drawn"]
    assert 1 <= drawn < 8 and len(trace["candidates"]) == drawn
    # At most one wave over: each wave was sized to fit at the mean cost so far.
    assert usage.completion_tokens <= 30 + 16
    assert usage.completion_tokens == sum(c["tokens"] for c in trace["candidates"])
    stopped = (response.model_extra or {}).get("reasoning_stopped_early")
    assert isinstance(stopped, str) and stopped.startswith("token budget reached")
    assert trace["samples"]["tokens_saved"] > 0


async def test_deepconf_stops_unconfident_traces_and_counts_them(
    client: openai.AsyncOpenAI,
) -> None:
    # DeepConf-low: the threshold is the warm-up's 90th percentile, so most later traces
    # fall below it somewhere and are cut while they are written.
    response = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=32,
        temperature=0.8,
        seed=11,
        extra_body={
            "reasoning_strategy": "majority_vote",
            "reasoning_params": {
                "n": 8,
                "return_trace": True,
                "answer_format": "last_number",
                "early_stop": {"method": "deepconf", "warmup": 4, "keep": "low", "window": 4},
            },
        },
    )
    trace = trace_of(response)
    deepconf = trace["deepconf"]
    traces = deepconf["traces"]
    assert [t["sample"] for t in traces] == list(range(8))
    assert [t["phase"] for t in traces] == ["warmup"] * 4 + ["stream"] * 4
    threshold = deepconf["threshold"]
    stopped = [t for t in traces if t["status"] == "stopped"]
    assert stopped, "DeepConf-low should stop some of SmolLM2's traces"
    for t in traces:
        # Kept traces reached the threshold; stopped ones fell below it, before max_tokens.
        if t["status"] == "kept":
            assert t["lowest_group_confidence"] >= threshold
        else:
            assert t["lowest_group_confidence"] < threshold
        if t["status"] == "stopped":
            assert t["phase"] == "stream" and 4 <= t["tokens"] < 32
    # Only kept traces are candidates, and only they vote.
    kept = [t for t in traces if t["status"] == "kept"]
    assert [c["text"] for c in trace["candidates"]] == [t["text"] for t in kept]
    assert response.choices[0].message.content in [t["text"] for t in kept]
    extras = response.model_extra or {}
    assert extras["reasoning_stopped_early"].startswith(f"deepconf: stopped {len(stopped)} of 4")
    # Usage counts every token drawn, the cut traces' included, and one prompt per call.
    usage = response.usage
    assert usage is not None
    assert usage.completion_tokens == sum(t["tokens"] for t in traces)
    assert usage.prompt_tokens % 5 == 0
