"""A request's fan-out as OpenTelemetry spans, read back from the SDK's in-memory exporter: the
gateway's server span joins the caller's trace, the strategy's waves and steps and every model
and verifier call nest under it, and every call the vLLM stand-in received carried a
`traceparent` naming the call span that made it (as real vLLM parents its own spans on it)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from bench.vllm_standin.answers import SERVED_MODEL
from bench.vllm_standin.state import StandIn
from server.app import create_app
from server.settings import Settings
from server.tracing import tracer_provider

pytestmark = pytest.mark.e2e

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
QUESTION = [{"role": "user", "content": "What is 3 + 4? Keep this line private."}]


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


@contextlib.asynccontextmanager
async def traced_gateway(
    standin: StandIn, exporter: InMemorySpanExporter, **tracing: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in this process in front of the stand-in, tracing into `exporter`."""
    settings = Settings.model_validate(
        {"backend": "vllm", "vllm_url": [standin.url], "tracing": tracing}
    )
    provider = tracer_provider(None, {}, SimpleSpanProcessor(exporter))
    app = create_app(settings, tracing=provider)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


def hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def by_id(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {hex_id(s.context.span_id, 16): s for s in spans}


def ancestors(span: ReadableSpan, spans: dict[str, ReadableSpan]) -> list[ReadableSpan]:
    found = []
    while span.parent is not None and hex_id(span.parent.span_id, 16) in spans:
        span = spans[hex_id(span.parent.span_id, 16)]
        found.append(span)
    return found


def check_tree(
    exporter: InMemorySpanExporter, standin: StandIn, reply: httpx.Response
) -> list[ReadableSpan]:
    """The trace's spans, once every structural claim about them is checked."""
    spans = exporter.get_finished_spans()
    trace_id = reply.headers["x-trace-id"]
    assert trace_id == CALLER_TRACE
    assert {hex_id(s.context.trace_id, 32) for s in spans} == {CALLER_TRACE}
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    assert len(servers) == 1
    server = servers[0]
    assert server.parent is not None and hex_id(server.parent.span_id, 16) == CALLER_SPAN
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    ids = by_id(spans)
    for span in spans:
        if span is not server:
            assert server in ancestors(span, ids), span.name
    # Every call the model server got names, as its parent, a client span of this trace.
    assert standin.requests
    for call in standin.requests:
        version, called_trace, parent, flags = call.headers["traceparent"].split("-")
        assert (version, called_trace, flags) == ("00", CALLER_TRACE, "01")
        assert ids[parent].kind == SpanKind.CLIENT, ids[parent].name
    return list(spans)


def attribute(span: ReadableSpan, name: str) -> int:
    value = (span.attributes or {})[name]
    assert isinstance(value, int)
    return value


def named(spans: Sequence[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def generated(spans: Sequence[ReadableSpan]) -> int:
    return sum(attribute(s, "gen_ai.usage.output_tokens") for s in named(spans, "chat "))


async def ask_in_callers_trace(
    client: httpx.AsyncClient, max_tokens: int, strategy: str, params: dict[str, Any]
) -> httpx.Response:
    """A chat completion by `strategy`, sent with the caller's `traceparent`."""
    return await client.post(
        "/v1/chat/completions",
        headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        json={
            "model": SERVED_MODEL,
            "messages": QUESTION,
            "max_tokens": max_tokens,
            "reasoning_strategy": strategy,
            "reasoning_params": params,
        },
    )


async def test_a_beam_search_is_a_tree_of_steps_calls_and_verifier_calls(
    fresh: StandIn, exported: InMemorySpanExporter
) -> None:
    async with traced_gateway(fresh, exported) as client:
        reply = await ask_in_callers_trace(
            client, 64, "beam_search", {"n": 4, "beam_width": 2, "verifier": "llm_judge"}
        )
    assert reply.status_code == 200, reply.text
    spans = check_tree(exported, fresh, reply)
    (run,) = named(spans, "beam_search")
    steps = named(spans, "step")
    assert steps and all(
        s.parent is not None and s.parent.span_id == run.context.span_id for s in steps
    )
    assert [(s.attributes or {})["ttc.number"] for s in steps] == list(range(1, len(steps) + 1))
    calls = named(spans, "chat ")
    verifies = named(spans, "verify llm_judge")
    assert calls and verifies
    for call in calls:
        attributes = call.attributes or {}
        assert call.kind == SpanKind.CLIENT
        assert attributes["gen_ai.request.model"] == SERVED_MODEL
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.response.finish_reasons"]
        # Each step's calls hang under that step.
        assert call.parent is not None and call.parent.span_id in {s.context.span_id for s in steps}
    usage = reply.json()["usage"]
    assert generated(spans) == usage["completion_tokens"]
    assert (run.attributes or {})["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    # No text of the request on any span unless asked for.
    for span in spans:
        for value in (span.attributes or {}).values():
            assert "private" not in str(value)


async def test_a_vote_in_waves_is_one_span_per_wave_and_text_only_when_asked(
    fresh: StandIn, exported: InMemorySpanExporter
) -> None:
    async with traced_gateway(fresh, exported, capture_text=True) as client:
        reply = await ask_in_callers_trace(
            client, 24, "majority_vote", {"n": 8, "early_stop": {"method": "beta", "wave": 2}}
        )
    assert reply.status_code == 200, reply.text
    spans = check_tree(exported, fresh, reply)
    waves = named(spans, "wave")
    assert len(waves) >= 1
    drawn = sum(attribute(w, "ttc.size") for w in waves)
    calls = named(spans, "chat ")
    assert len(calls) == len(waves)
    assert sum(attribute(c, "gen_ai.request.choice.count") for c in calls) == drawn
    assert generated(spans) == reply.json()["usage"]["completion_tokens"]
    assert all("private" in str((c.attributes or {})["gen_ai.input.messages"]) for c in calls)
    assert all((c.attributes or {})["gen_ai.output.messages"] for c in calls)


async def test_a_request_without_traceparent_starts_a_trace_and_says_which(
    fresh: StandIn, exported: InMemorySpanExporter
) -> None:
    async with traced_gateway(fresh, exported) as client:
        reply = await client.post(
            "/v1/chat/completions",
            json={"model": SERVED_MODEL, "messages": QUESTION, "max_tokens": 8},
        )
        refused = await client.post("/v1/chat/completions", json={"model": SERVED_MODEL})
        scraped = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert reply.status_code == 200
    spans = exported.get_finished_spans()
    traces = {hex_id(s.context.trace_id, 32) for s in spans}
    assert reply.headers["x-trace-id"] in traces
    # The request's latency links to its trace (an exemplar, which OpenMetrics carries).
    assert f'trace_id="{reply.headers["x-trace-id"]}"' in scraped.text
    # A refused request is traced too, with its status.
    assert refused.status_code == 400
    (server,) = [
        s
        for s in spans
        if s.kind == SpanKind.SERVER
        and hex_id(s.context.trace_id, 32) == refused.headers["x-trace-id"]
    ]
    assert (server.attributes or {})["http.response.status_code"] == 400


def test_tracing_is_off_without_an_endpoint_and_on_with_one() -> None:
    assert tracer_provider(None, {}) is None
    assert tracer_provider(False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) is None
    on = tracer_provider(
        None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}
    )
    assert isinstance(on, TracerProvider)
    on.shutdown()
    with pytest.raises(ValueError, match="http/json"):
        tracer_provider(True, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
