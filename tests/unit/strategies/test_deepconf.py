"""DeepConf online on scripted traces whose token confidences are set word by word: the
threshold, the sliding window, which traces are stopped and when, consensus, and usage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from backends.base import Prompt, SamplingParams, StreamDelta, StreamEnd, StreamEvent, TokenLogprob
from backends.scripted import ScriptedBackend
from strategies.base import InvalidParamsError, ParamsContext, StrategyResult
from strategies.context import StrategyContext
from strategies.deepconf import percentile
from strategies.limits import Limits
from strategies.registry import get_strategy, parse_params
from tests.factories import chat_request
from verifiers.confidence import (
    ConfidenceConfig,
    ConfidenceVerifier,
    GroupConfidence,
    lowest_group_confidence,
)

CONTEXT = ParamsContext(
    verifiers=frozenset({"confidence", "v"}),
    limits=Limits(max_n=16),
    logprob_verifiers=frozenset({"confidence"}),
)
# A token's confidence (minus the mean of its top log-probabilities), by word; others 2.
CONFIDENCE = {"hi": 4.0, "ok": 2.0, "lo": 1.0}


def token_logprob(token: str, k: int) -> TokenLogprob:
    confidence = CONFIDENCE.get(token.strip(), 2.0)
    return TokenLogprob(token, -0.1, (("alt", -confidence),) * k)


class Watched(ScriptedBackend):
    """The scripted backend, noting how many deltas each stream sent before it was closed
    without reaching its end."""

    def __init__(self, texts: list[str]) -> None:
        super().__init__(texts, token_logprob=token_logprob)
        self.closed_after: list[int] = []

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamEvent]:
        sent, ended = 0, False
        try:
            async for event in super().stream(prompt, params):
                ended = isinstance(event, StreamEnd)
                sent += isinstance(event, StreamDelta)
                yield event
        finally:
            if not ended:
                self.closed_after.append(sent)


async def run(
    texts: list[str], early_stop: dict[str, Any], strategy: str = "majority_vote", **more: Any
) -> tuple[StrategyResult, Watched, dict[str, Any]]:
    backend = Watched(texts)
    chosen = get_strategy(strategy)
    params = {"return_trace": True, "answer_format": "last_number", **more}
    parsed = parse_params(chosen, {**params, "early_stop": early_stop}, CONTEXT)
    verifiers = {"confidence": ConfidenceVerifier(ConfidenceConfig(metric="lowest_group"))}
    ctx = StrategyContext(backend=backend, request_id="r", verifiers=verifiers)
    result = await chosen.run(chat_request(), parsed, ctx)
    assert result.trace is not None
    return result, backend, dict(result.trace)


def fates(trace: dict[str, Any]) -> list[tuple[int, str, str, float, int]]:
    return [
        (t["sample"], t["phase"], t["status"], t["lowest_group_confidence"], t["tokens"])
        for t in trace["deepconf"]["traces"]
    ]


def test_group_confidence_follows_the_window_as_tokens_arrive() -> None:
    group = GroupConfidence(window=2)
    seen = []
    for confidence in [4.0, 4.0, 1.0, 2.0]:
        group.add(confidence)
        seen.append((group.full, group.lowest))
    # Before a whole window, the mean so far; then the lowest window mean.
    assert seen == [(False, 4.0), (True, 4.0), (True, 2.5), (True, 1.5)]
    logprobs = [token_logprob(w, 3) for w in ["hi", "hi", "lo", "ok"]]
    assert group.lowest == lowest_group_confidence(logprobs, window=2)


def test_percentile_interpolates_between_ranks() -> None:
    values = [3.0, 1.0, 2.0, 1.5]
    assert percentile(values, 50) == 1.75
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 3.0
    # DeepConf-high's threshold: the 10th percentile, 0.3 of the way from 1.0 to 1.5.
    assert percentile(values, 10) == pytest.approx(1.15)


async def test_unconfident_traces_are_stopped_and_do_not_vote() -> None:
    texts = [
        # Warm-up, lowest windows of 2: 3.0, 2.0, 1.5, 1.0. Keeping half: threshold 1.75.
        "hi hi hi 4",
        "ok ok ok 4",
        "hi hi lo 5",
        "lo lo hi 5",
        # Streamed: whole and confident; below at its second token; shorter than a window.
        "ok hi ok 4",
        "ok lo lo lo lo lo 5",
        "lo",
    ]
    result, backend, trace = await run(texts, {"method": "deepconf", "keep": 50, "window": 2}, n=7)
    assert trace["deepconf"]["threshold"] == 1.75
    assert fates(trace) == [
        (0, "warmup", "kept", 3.0, 4),
        (1, "warmup", "kept", 2.0, 4),
        (2, "warmup", "below", 1.5, 4),
        (3, "warmup", "below", 1.0, 4),
        (4, "stream", "kept", 2.0, 4),
        (5, "stream", "stopped", 1.5, 2),
        (6, "stream", "below", 1.0, 1),
    ]
    # One call of 4 for the warm-up, then one streamed call per trace, with 5 alternatives.
    assert [(c.method, c.params.n if c.params else 0) for c in backend.calls] == [
        ("generate", 4),
        ("stream", 1),
        ("stream", 1),
        ("stream", 1),
    ]
    assert {p.logprobs for p in backend.sampled} == {5}
    # The stopped trace's stream was closed after its second token, before its end.
    assert backend.closed_after == [2]
    # Only the kept traces vote: 4 three times; the 5s never count.
    assert trace["votes"] == {"4": 3.0}
    assert result.choices[0].content == "hi hi hi 4"
    assert result.stopped_early == (
        "deepconf: stopped 1 of 3 streamed traces below confidence 1.750"
    )
    # Usage counts every token drawn, the stopped trace's two included; each call's prompt.
    assert result.usage.completion_tokens == 16 + 4 + 2 + 1
    assert result.usage.prompt_tokens == 4 * 7 and result.usage.calls == 4
    # Saved: 7 whole traces at the whole ones' mean of 21 / 6 tokens, 24, less the 23 drawn.
    assert trace["samples"] == {"requested": 7, "drawn": 7, "voted": 3, "tokens_saved": 1}


async def test_the_default_keeps_nine_tenths_of_the_warm_up() -> None:
    texts = ["hi hi hi 4", "ok ok ok 4", "hi hi lo 5", "lo lo hi 5", "ok lo ok 4"]
    result, _, trace = await run(texts, {"method": "deepconf", "window": 2}, n=5)
    # The 10th percentile of 1.0, 1.5, 2.0, 3.0: only the least confident warm-up trace is out,
    # and a streamed trace dipping to 1.5 survives it.
    assert trace["deepconf"]["threshold"] == pytest.approx(1.15)
    assert [t["status"] for t in trace["deepconf"]["traces"]] == [
        "kept",
        "kept",
        "kept",
        "below",
        "kept",
    ]
    assert result.stopped_early is None


async def test_an_agreeing_warm_up_reaches_consensus_and_streams_nothing() -> None:
    result, backend, trace = await run(["ok ok 4"], {"method": "deepconf", "consensus": 0.9}, n=8)
    assert [c.method for c in backend.calls] == ["generate"]
    assert result.stopped_early == (
        "deepconf: 100% of the vote agreed after 4 of 8 traces (consensus 0.9)"
    )
    # 8 whole traces of 3 tokens would have cost 24; the warm-up cost 12.
    assert trace["samples"]["tokens_saved"] == 12 and result.tokens_saved == 12


async def test_consensus_starts_no_more_traces() -> None:
    texts = ["ok 4", "ok 5", "ok 4", "ok 5", "ok 4", "ok 4", "ok 4", "ok 4"]
    result, backend, trace = await run(
        texts, {"method": "deepconf", "keep": 100, "consensus": 0.7, "parallel": 1}, n=8
    )
    # 2-2 after the warm-up; 3-2, 4-2, then 5-2 holds 71 %: the eighth is never drawn.
    assert [c.method for c in backend.calls] == ["generate", "stream", "stream", "stream"]
    assert len(trace["deepconf"]["traces"]) == 7
    assert result.stopped_early is not None and "after 7 of 8 traces" in result.stopped_early


async def test_consensus_stops_the_traces_in_flight() -> None:
    texts = ["ok 4", "ok 5", "ok 4", "ok 5", "ok 4", "ok ok ok ok ok ok ok ok 5"]
    result, backend, trace = await run(
        texts, {"method": "deepconf", "keep": 100, "consensus": 0.6, "parallel": 2}, n=7
    )
    by_sample = {t["sample"]: t for t in trace["deepconf"]["traces"]}
    # Trace 4 settles the vote at 3-2 while trace 5 is being written; 6 never starts.
    assert by_sample[4]["status"] == "kept"
    assert by_sample[5]["status"] == "cancelled" and by_sample[5]["tokens"] < 9
    assert 6 not in by_sample
    assert backend.closed_after == [by_sample[5]["tokens"]]
    assert result.usage.completion_tokens == sum(t["tokens"] for t in by_sample.values())
    assert result.choices[0].content == "ok 4"


async def test_weighted_vote_weighs_the_kept_traces_by_confidence() -> None:
    texts = ["hi hi 5", "ok ok 4", "ok ok 4", "lo lo 4", "ok ok 4", "hi hi 5"]
    result, _, trace = await run(
        texts,
        {"method": "deepconf", "keep": 75, "window": 2},
        strategy="weighted_vote",
        n=6,
        verifier="confidence",
    )
    # Warm-up: 3.0, 2.0, 2.0, 1.0; keeping 3/4: threshold 1.75, the "lo" trace is out.
    assert trace["deepconf"]["threshold"] == 1.75
    # Each kept trace weighs its confidence by the verifier's own window (16 tokens: here the
    # whole trace): 10/3 twice for 5 against 2 three times for 4.
    assert trace["votes"] == {"5": pytest.approx(20 / 3), "4": 6.0}
    assert result.choices[0].content == "hi hi 5"
    assert len(trace["candidates"]) == 5


def test_params_are_checked() -> None:
    majority, weighted = get_strategy("majority_vote"), get_strategy("weighted_vote")
    with pytest.raises(InvalidParamsError) as info:
        parse_params(majority, {"early_stop": {"method": "deepconf", "keep": 0}}, CONTEXT)
    assert info.value.param == "reasoning_params.early_stop.deepconf.keep"
    with pytest.raises(InvalidParamsError) as info:
        parse_params(majority, {"n": 4, "early_stop": {"method": "deepconf"}}, CONTEXT)
    assert "warmup (4) must be below n (4)" in str(info.value)
    with pytest.raises(InvalidParamsError) as info:
        parse_params(weighted, {"verifier": "v", "early_stop": {"method": "deepconf"}}, CONTEXT)
    assert info.value.param == "reasoning_params.early_stop"
    assert "'v' does not score token log-probabilities" in str(info.value)
    # best_of_n keeps its own rule only.
    with pytest.raises(InvalidParamsError):
        parse_params(
            get_strategy("best_of_n"),
            {"verifier": "v", "early_stop": {"method": "deepconf"}},
            CONTEXT,
        )


def test_what_a_verifier_scores_comes_from_the_server_not_its_name() -> None:
    context = ParamsContext(verifiers=frozenset({"confidence"}))
    with pytest.raises(InvalidParamsError):
        parse_params(get_strategy("weighted_vote"), {"early_stop": {"method": "deepconf"}}, context)
