"""The test-time compute metrics after scripted runs: agreement, candidates drawn against
allowed, why a run stopped, verifier scores and answer tokens, as `Serving` records them; and
the latency's exemplar, which /metrics shows only in OpenMetrics."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from backends.scripted import ScriptedBackend
from server.metrics import Metrics
from server.protocol.chat import ChatCompletionRequest
from server.serving.running import Serving
from strategies.base import StrategyResult
from strategies.limits import Limits
from tests.factories import SCRIPTED_MODEL, TableVerifier, app_client, chat_body
from tests.unit.strategies.test_search import PathPRM, children
from verifiers.base import Verifier


async def run(serving: Serving, body: dict[str, Any]) -> StrategyResult:
    request = ChatCompletionRequest.model_validate(body)
    prepared = await serving.prepare(request, "chatcmpl-1")
    return await serving.complete(prepared)


def reader(registry: CollectorRegistry, strategy: str) -> Any:
    def value(name: str, **labels: str) -> float:
        labels = {"strategy": strategy, **labels}
        if "verifier" not in labels:
            labels["model"] = SCRIPTED_MODEL
        return registry.get_sample_value(name, labels) or 0.0

    return value


async def test_a_majority_vote_reports_its_agreement_draws_and_stop() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    split = Serving(ScriptedBackend(["Answer: 4", "Answer: 4", "Answer: 5"]), Limits(), metrics)
    unanimous = Serving(ScriptedBackend(["Answer: 4"]), Limits(), metrics)
    whole = await run(
        split, chat_body(reasoning_strategy="majority_vote", reasoning_params={"n": 3})
    )
    # Waves of 2 until no candidate left could overturn the lead: 6 > 2 left after 6 of 8.
    rule = {"method": "margin", "wave": 2, "min_samples": 2}
    early = await run(
        unanimous,
        chat_body(
            reasoning_strategy="majority_vote", reasoning_params={"n": 8, "early_stop": rule}
        ),
    )
    assert (whole.agreement, whole.drawn, whole.allowed, whole.stop) == (2 / 3, 3, 3, "all_drawn")
    assert (early.agreement, early.drawn, early.allowed, early.stop) == (1.0, 6, 8, "settled")

    value = reader(registry, "majority_vote")
    assert value("ttc_candidates_drawn_total") == 9
    assert value("ttc_candidates_allowed_total") == 11
    assert value("ttc_stops_total", reason="all_drawn") == 1
    assert value("ttc_stops_total", reason="settled") == 1
    assert value("ttc_stops_total", reason="budget") == 0
    assert value("ttc_answer_agreement_count") == 2
    assert value("ttc_answer_agreement_sum") == pytest.approx(2 / 3 + 1)
    # 2/3 falls in (0.6, 0.7]; only the unanimous vote reaches le="1.0" past le="0.99".
    assert value("ttc_answer_agreement_bucket", le="0.6") == 0
    assert value("ttc_answer_agreement_bucket", le="0.7") == 1
    assert value("ttc_answer_agreement_bucket", le="0.99") == 1
    assert value("ttc_answer_agreement_bucket", le="1.0") == 2
    # No thinking: every generated token is an answer's.
    generated = whole.usage.completion_tokens + early.usage.completion_tokens
    assert generated > 0
    assert value("ttc_answer_tokens_total") == generated
    assert value("ttc_thinking_tokens_total") == 0


async def test_a_beam_search_reports_its_steps_stop_and_verifier_scores() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    serving = Serving(ScriptedBackend(children), Limits(), metrics, verifiers={"prm": PathPRM()})
    params = {"verifier": "prm", "n": 4, "beam_width": 2}
    # Every beam finishes at the third step (test_search's tree).
    finished = await run(
        serving, chat_body(reasoning_strategy="beam_search", reasoning_params=params)
    )
    # Two iterations: no beam finishes.
    cut = await run(
        serving,
        chat_body(
            reasoning_strategy="beam_search", reasoning_params={**params, "num_iterations": 2}
        ),
    )
    # Three tokens: spent by the first step.
    spent = await run(
        serving,
        chat_body(
            reasoning_strategy="beam_search", reasoning_params={**params, "max_search_tokens": 3}
        ),
    )
    # 4 first steps, then 2 kept beams x 2 at each later step, of 10 iterations allowed.
    assert (finished.drawn, finished.allowed, finished.stop) == (12, 4 + 9 * 4, "all_finished")
    assert (cut.drawn, cut.allowed, cut.stop) == (8, 8, "max_steps")
    assert (spent.drawn, spent.stop) == (4, "budget")
    assert finished.agreement is None

    value = reader(registry, "beam_search")
    for reason, count in (("all_finished", 1), ("max_steps", 1), ("budget", 1), ("settled", 0)):
        assert value("ttc_stops_total", reason=reason) == count, reason
    assert value("ttc_candidates_drawn_total") == 12 + 8 + 4
    assert value("ttc_candidates_allowed_total") == 40 + 8 + 40
    assert value("ttc_answer_agreement_count") == 0
    # The finished search scored s0a-d (.5 .9 .2 .6), s1a s1b twice (.3 .4), s2a s2b twice
    # (.99 .7); the cut one its first two steps; the spent one its first.
    first, second, third = 0.5 + 0.9 + 0.2 + 0.6, 2 * (0.3 + 0.4), 2 * (0.99 + 0.7)
    assert value("ttc_verifier_scores_count", verifier="prm") == 12 + 8 + 4
    assert value("ttc_verifier_scores_sum", verifier="prm") == pytest.approx(
        3 * first + 2 * second + third
    )
    # At most 0.5: s0a, s0c, and every s1 step.
    assert value("ttc_verifier_scores_bucket", verifier="prm", le="0.5") == 3 * 2 + 2 * 4
    assert value("ttc_verifier_scores_bucket", verifier="prm", le="0.95") == 24 - 2


def test_the_latency_carries_the_trace_id_as_its_exemplar() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    metrics.observe("none", SCRIPTED_MODEL, "ok", 0.3, trace_id=trace_id)
    metrics.observe("cot", SCRIPTED_MODEL, "ok", 0.3)
    encode, _ = choose_encoder("application/openmetrics-text;version=1.0.0")
    lines = encode(registry).decode().splitlines()
    (marked,) = [line for line in lines if "trace_id" in line]
    assert marked.startswith('ttc_request_duration_seconds_bucket{le="0.5",model=')
    assert 'strategy="none"' in marked
    assert f'# {{trace_id="{trace_id}"}} 0.3' in marked


async def test_metrics_are_openmetrics_when_the_scraper_asks() -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    async with app_client(ScriptedBackend(["x"])) as client:
        plain = await client.get("/metrics")
        open_metrics = await client.get("/metrics", headers={"Accept": accept})
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# EOF" not in plain.text
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.endswith("# EOF\n")


SPLIT = ["Answer: 4", "Answer: 4", "Answer: 5"]
TABLE = TableVerifier({"Answer: 4": 0.9, "Answer: 5": 0.2})
# (strategy, params, script): what its result reports of agreement, drawn, allowed and stop.
RUNS: list[tuple[str, dict[str, Any], Any, tuple[float | None, int, int, str]]] = [
    ("best_of_n", {"n": 3, "verifier": "table"}, SPLIT, (2 / 3, 3, 3, "all_drawn")),
    ("weighted_vote", {"n": 3, "verifier": "table"}, SPLIT, (2 / 3, 3, 3, "all_drawn")),
    # Stage 1 of the policy draws 4 (4, 4, 5, 4): 3 agree, past its 2.
    (
        "auto",
        {"policy": [{"samples": 4, "stop_at": 2}, {"samples": 8}]},
        SPLIT,
        (0.75, 4, 8, "settled"),
    ),
    (
        "majority_vote",
        {"n": 4, "early_stop": {"method": "deepconf", "warmup": 2, "keep": 100}},
        ["Answer: 4"],
        (1.0, 4, 4, "all_drawn"),
    ),
    # Two subtrees of width 2 finish at their third step, of 10.
    (
        "dvts",
        {"verifier": "prm", "n": 4, "beam_width": 2},
        children,
        (None, 12, 40, "all_finished"),
    ),
    ("particle_filtering", {"verifier": "prm", "n": 4}, children, (None, 12, 40, "all_finished")),
    ("mcts", {"verifier": "prm", "iterations": 4, "k": 2}, children, (None, 8, 8, "max_steps")),
]


@pytest.mark.parametrize(("strategy", "params", "script", "expected"), RUNS, ids=lambda r: r)
async def test_every_voting_and_searching_strategy_fills_the_contract(
    strategy: str, params: dict[str, Any], script: Any, expected: tuple[Any, ...]
) -> None:
    registry = CollectorRegistry()
    verifiers: dict[str, Verifier] = {"prm": PathPRM(), "table": TABLE}
    serving = Serving(ScriptedBackend(script), Limits(), Metrics(registry), verifiers=verifiers)
    result = await run(serving, chat_body(reasoning_strategy=strategy, reasoning_params=params))
    agreement, drawn, allowed, stop = expected
    assert result.agreement == (pytest.approx(agreement) if agreement is not None else None)
    assert (result.drawn, result.allowed, result.stop) == (drawn, allowed, stop)
    value = reader(registry, strategy)
    assert value("ttc_stops_total", reason=stop) == 1
    assert value("ttc_candidates_allowed_total") == allowed
