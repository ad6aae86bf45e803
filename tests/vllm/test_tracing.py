"""One trace from the client to vLLM's engine, read back from a real trace backend (Phoenix): the
gateway (`traced_gateway`) and the generator and PRM replicas (started with
`--otlp-traces-endpoint`) export to the same Phoenix; every vLLM `llm_request` span must be the
child of the gateway call span that caused it, every gateway span must descend from the
request's server span, and the tokens on the spans must be the response's usage.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx

from bench.processes import poll
from tests.vllm.conftest import GENERATOR, VLLMServers
from tests.vllm.trace_backend import Span

# A search of a few steps and a vote: each step a generator call and a PRM call.
BEAM_SEARCH = {
    "reasoning_strategy": "beam_search",
    "reasoning_params": {"n": 4, "beam_width": 2, "num_iterations": 3, "verifier": "prm"},
}
VOTE = {"reasoning_strategy": "majority_vote", "reasoning_params": {"n": 4}}


def ask(gateway: str, fields: dict[str, Any], traceparent: str) -> httpx.Response:
    body = {
        "model": GENERATOR,
        "messages": [{"role": "user", "content": "What is 12 + 30? Answer step by step."}],
        "max_tokens": 48,
        "temperature": 0.8,
        "seed": 5,
        **fields,
    }
    reply = httpx.post(
        f"{gateway}/v1/chat/completions",
        json=body,
        headers={"traceparent": traceparent},
        timeout=600,
    )
    reply.raise_for_status()
    return reply


def settled(vllm: VLLMServers, trace_id: str, done: Callable[[list[Span]], bool]) -> list[Span]:
    """The trace's spans once `done` says all have arrived (they are exported in batches)."""
    spans: list[Span] = []

    def arrived() -> bool:
        spans[:] = vllm.traces.spans(trace_id)
        return done(spans)

    assert poll(arrived, 60), f"the trace's spans did not all arrive: {spans}"
    return spans


def check_tree(vllm: VLLMServers, gateway: str, fields: dict[str, Any]) -> list[Span]:
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    reply = ask(gateway, fields, f"00-{trace_id}-{caller}-01")
    assert reply.headers["x-trace-id"] == trace_id

    def complete(spans: list[Span]) -> bool:
        """The server span is in, and every model call's sample has its vLLM span."""
        calls = [s for s in spans if s["name"].startswith("chat ")]
        parents = [s["parent_span_id"] for s in spans if s["name"] == "llm_request"]
        return (
            any(s["name"] == "POST /v1/chat/completions" for s in spans)
            and bool(calls)
            and all(
                parents.count(c["span_id"]) >= c["attributes"]["gen_ai.request.choice.count"]
                for c in calls
            )
        )

    spans = settled(vllm, trace_id, complete)
    ids = {s["span_id"]: s for s in spans}
    (server,) = [s for s in spans if s["name"] == "POST /v1/chat/completions"]
    assert server["parent_span_id"] == caller
    for span in spans:
        assert span["trace_id"] == trace_id
        if span is server or span["name"] == "llm_request":
            continue
        # Every gateway span descends from the request's server span.
        parent = span
        while parent["parent_span_id"] in ids:
            parent = ids[parent["parent_span_id"]]
        assert parent is server, span["name"]
    # Every one of vLLM's spans is the child of the gateway's call span that caused it.
    engine = [s for s in spans if s["name"] == "llm_request"]
    assert engine
    for span in engine:
        assert span["parent_span_id"] is not None
        parent = ids[span["parent_span_id"]]
        assert parent["name"].startswith(("chat ", "verify ")), parent["name"]
    # Each model call's tokens are the tokens vLLM reports on its own spans (one per sample: a
    # call of n samples is n requests inside vLLM), and together the response's usage.
    calls = [s for s in spans if s["name"].startswith("chat ")]
    for call in calls:
        children = [s for s in engine if s["parent_span_id"] == call["span_id"]]
        assert len(children) == call["attributes"]["gen_ai.request.choice.count"]
        produced = call["attributes"]["gen_ai.usage.output_tokens"]
        assert sum(c["attributes"]["gen_ai.usage.completion_tokens"] for c in children) == produced
    usage = reply.json()["usage"]
    assert (
        sum(c["attributes"]["gen_ai.usage.output_tokens"] for c in calls)
        == (usage["completion_tokens"])
    )
    return spans


def test_a_beam_searchs_trace_nests_vllms_spans_under_its_calls(
    vllm: VLLMServers, traced_gateway: str
) -> None:
    spans = check_tree(vllm, traced_gateway, BEAM_SEARCH)
    steps = [s for s in spans if s["name"] == "step"]
    assert steps
    verifies = [s for s in spans if s["name"] == "verify prm"]
    assert verifies
    # The PRM's calls are traced by the PRM's vLLM too, under the verifier's span.
    scored = {s["parent_span_id"] for s in spans if s["name"] == "llm_request"}
    assert any(v["span_id"] in scored for v in verifies)


def test_a_votes_trace_nests_vllms_span_under_its_one_call(
    vllm: VLLMServers, traced_gateway: str
) -> None:
    spans = check_tree(vllm, traced_gateway, VOTE)
    (call,) = [s for s in spans if s["name"].startswith("chat ")]
    assert call["attributes"]["gen_ai.request.choice.count"] == 4
