"""vLLM's own tracing, read back from a real trace backend: started with `--otlp-traces-endpoint`,
vLLM exports one `llm_request` span per request, parented on the W3C `traceparent` it was sent.

Self-contained: one traced vLLM (the generator's model, 1 GiB of KV cache) and one Phoenix,
for this module only.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from backends.smollm2 import converted_model_dir
from bench.vllm_cpu import vllm_command, vllm_env
from tests.factories import free_port
from tests.servers import ServerSpec, server_processes
from tests.vllm.trace_backend import TraceBackend, phoenix_spec

SERVED = "smollm2-traced"


@pytest.fixture(scope="module")
def traced_vllm() -> Iterator[tuple[str, TraceBackend]]:
    """vLLM exporting its spans to Phoenix; both start at once, so Phoenix's start-up is hidden
    in vLLM's."""
    port = free_port()
    with phoenix_spec() as (phoenix, backend):
        command = vllm_command(converted_model_dir(), SERVED, port, *backend.vllm_flags())
        env = {**vllm_env(kv_cache_gib=1), **backend.vllm_env()}
        vllm = ServerSpec("vllm-traced", command, port, env)
        with server_processes(phoenix, vllm, ready_timeout_s=600):
            yield vllm.url, backend


def test_vllm_parents_its_llm_request_span_on_the_traceparent_it_was_sent(
    traced_vllm: tuple[str, TraceBackend],
) -> None:
    url, backend = traced_vllm
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    body = {
        "model": SERVED,
        "messages": [{"role": "user", "content": "What is 2 + 2?"}],
        "max_tokens": 8,
        "temperature": 0,
    }
    response = httpx.post(
        f"{url}/v1/chat/completions",
        json=body,
        headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
        timeout=300,
    )
    response.raise_for_status()

    spans = backend.wait_for_span(trace_id, "llm_request")
    (request,) = (span for span in spans if span["name"] == "llm_request")
    assert request["trace_id"] == trace_id
    assert request["parent_span_id"] == parent_id
    assert request["span_id"] not in (parent_id, "0" * 16)
    assert request["start_time"] <= request["end_time"]
    usage = response.json()["usage"]
    # vLLM's own attribute, as Phoenix flattens nested keys.
    assert request["attributes"]["gen_ai.usage.completion_tokens"] == usage["completion_tokens"]
