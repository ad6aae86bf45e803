"""The gateway's Prometheus metrics agree with the responses it sent."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from backends.base import Prompt, SamplingParams
from backends.errors import BackendUnavailable
from backends.scripted import ScriptedBackend
from server.metrics import Metrics
from server.protocol.chat import ChatCompletionRequest
from server.serving.chat import ChatRendering
from server.serving.running import Serving
from server.settings import ModelPrice, Settings
from strategies.limits import Limits
from tests.exposition import Samples
from tests.factories import SCRIPTED_MODEL, app_client, chat_body, sse_events

PRICE = ModelPrice(prompt=1.0, completion=2.0, verifier=4.0)
BODIES = [
    chat_body(),
    chat_body(reasoning_strategy="cot"),
    chat_body(reasoning_strategy="majority_vote", reasoning_params={"n": 3}),
    chat_body(reasoning_strategy="best_of_n", reasoning_params={"n": 2}),
    chat_body(
        reasoning_strategy="weighted_vote", reasoning_params={"n": 2, "verifier": "llm_judge"}
    ),
]


async def scrape(client: httpx.AsyncClient) -> Samples:
    return Samples.parse((await client.get("/metrics")).text)


async def test_tokens_and_dollars_counted_equal_the_usage_returned() -> None:
    settings = Settings(prices={SCRIPTED_MODEL: PRICE})
    backend = ScriptedBackend(["Two and two make 4.\nAnswer: 4", "It is 5"])
    usages: list[dict[str, Any]] = []
    async with app_client(backend, settings=settings) as client:
        for body in BODIES:
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            usages.append(response.json()["usage"])
        streamed = await client.post(
            "/v1/chat/completions",
            json=chat_body(
                reasoning_strategy="majority_vote",
                reasoning_params={"n": 2},
                stream=True,
                stream_options={"include_usage": True},
            ),
        )
        usages.append(sse_events(streamed.text)[-2]["usage"])
        samples = await scrape(client)

    prompt = sum(u["prompt_tokens"] for u in usages)
    generated = sum(u["completion_tokens"] for u in usages)
    verifier = sum(u.get("verifier_tokens", 0) for u in usages)
    assert generated > 0 and verifier > 0
    assert samples.get("ttc_prompt_tokens_total") == prompt
    assert samples.get("ttc_generated_tokens_total") == generated
    assert samples.get("ttc_verifier_tokens_total") == verifier
    dollars = (prompt * 1.0 + generated * 2.0 + verifier * 4.0) / 1e6
    assert abs(samples.get("ttc_cost_dollars_total") - dollars) < 1e-12
    assert abs(samples.get("ttc_request_cost_dollars_sum") - dollars) < 1e-12
    assert samples.get("ttc_request_cost_dollars_count") == len(usages)
    # Candidates: 1 + 1 + 3 + 2 + 2 + 2 sampled completions.
    assert samples.get("ttc_request_candidates_sum") == 11
    assert samples.get("ttc_backend_calls_total", outcome="ok") == len(usages)
    assert samples.get("ttc_verifier_calls_total", verifier="llm_judge", outcome="ok") == 1
    assert samples.get("ttc_verifier_calls_total", verifier="confidence", outcome="ok") == 1
    for phase in ("queue", "generate", "verify"):
        assert samples.get("ttc_phase_duration_seconds_count", phase=phase) == len(usages)
    assert samples.get("ttc_time_to_first_token_seconds_count") == 1
    assert samples.get("ttc_requests_in_flight") == 0


async def test_failures_are_counted_and_leave_nothing_in_flight() -> None:
    backend = ScriptedBackend(["x"], error=BackendUnavailable("vLLM went away"))
    async with app_client(backend) as client:
        failed = await client.post("/v1/chat/completions", json=chat_body())
        streamed = await client.post("/v1/chat/completions", json=chat_body(stream=True))
        samples = await scrape(client)
    assert failed.status_code == 503
    assert "error" in sse_events(streamed.text)[-2]
    assert samples.get("ttc_requests_total", status="backend_error") == 2
    assert samples.get("ttc_backend_calls_total", outcome="error") == 2
    assert samples.get("ttc_requests_in_flight") == 0
    # Without a configured price there is no cost to report.
    assert samples.get("ttc_cost_dollars_total") == 0


async def test_a_verifier_failure_is_a_flagged_fallback_in_the_metrics() -> None:
    calls = 0

    def script(prompt: Prompt, params: SamplingParams) -> list[str]:
        nonlocal calls
        calls += 1
        if calls > 1:  # the candidates came first; the judge's calls fail
            raise BackendUnavailable("the judge went away")
        return ["Answer: 4"] * params.n

    body = chat_body(
        reasoning_strategy="best_of_n",
        reasoning_params={"n": 2, "verifier": "llm_judge", "on_verifier_error": "vote"},
    )
    async with app_client(ScriptedBackend(script)) as client:
        response = await client.post("/v1/chat/completions", json=body)
        samples = await scrape(client)
    assert response.status_code == 200
    assert "llm_judge" in response.json()["reasoning_fallback"]
    assert samples.get("ttc_verifier_fallbacks_total") == 1
    assert samples.get("ttc_verifier_calls_total", verifier="llm_judge", outcome="error") == 1
    assert samples.get("ttc_requests_total", status="ok") == 1


async def test_labels_hold_no_client_text() -> None:
    async with app_client(ScriptedBackend(["x"])) as client:
        await client.post(
            "/v1/chat/completions",
            json=chat_body("a secret prompt"),
            headers={"X-Request-Id": "req-42"},
        )
        text = (await client.get("/metrics")).text
    assert "secret" not in text and "req-42" not in text


async def test_a_stream_closed_by_its_client_counts_the_call_it_cut_short() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    serving = Serving(ScriptedBackend(["x"], delay_s=30), Limits(), metrics)
    body = ChatCompletionRequest.model_validate(chat_body(stream=True))
    prepared = await serving.prepare(body, "chatcmpl-1")
    stream = serving.stream(prepared, ChatRendering("chatcmpl-1", SCRIPTED_MODEL, False))
    await anext(stream)  # the opening chunk; generation is under way
    await asyncio.sleep(0.05)
    await stream.aclose()  # what a disconnect does to the response's generator
    await asyncio.sleep(0.05)

    def value(name: str, **labels: str) -> float:
        return (
            registry.get_sample_value(name, {"strategy": "none", "model": SCRIPTED_MODEL, **labels})
            or 0.0
        )

    assert value("ttc_requests_total", status="cancelled") == 1
    assert value("ttc_backend_calls_total", outcome="cancelled") == 1
    assert value("ttc_requests_in_flight") == 0


async def test_a_budget_is_checked_against_the_price_and_what_it_saves_is_counted() -> None:
    body = chat_body(
        reasoning_strategy="majority_vote",
        reasoning_params={"n": 16, "budget": {"usd": 0.02}},
        max_tokens=8,
    )
    unpriced = Settings()
    async with app_client(ScriptedBackend(["the answer is 4"]), settings=unpriced) as client:
        refused = await client.post("/v1/chat/completions", json=body)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "reasoning_params.budget.usd"
    assert "--prices" in refused.json()["error"]["message"]

    priced = Settings(prices={SCRIPTED_MODEL: ModelPrice(completion=1000.0)})
    async with app_client(ScriptedBackend(["the answer is 4"]), settings=priced) as client:
        response = await client.post("/v1/chat/completions", json=body)
        samples = await scrape(client)
    assert response.status_code == 200
    # $0.02 is 20 tokens at $1,000 per million: 2 candidates of up to 8, then 3 of 4;
    # 11 undrawn at 4 each.
    assert response.json()["reasoning_stopped_early"] == "usd budget reached ($0.020000 of $0.02)"
    assert samples.get("ttc_early_stops_total") == 1
    assert samples.get("ttc_early_stop_saved_tokens_total") == 44
