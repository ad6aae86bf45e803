"""Real Prometheus scrapes a real gateway on the embedded model, with deploy/'s config and rules.

After real traffic, every PromQL expression of every gateway panel of the dashboard and every
recording rule must return data, and the token counters must equal the usage the responses
reported. The vLLM panels are checked the same way in the vLLM job (tests/vllm).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
import yaml
from fastapi import FastAPI
from openai.types.chat import ChatCompletionMessageParam

from backends.scripted import ScriptedBackend
from server.app import create_app
from server.metrics import Metrics
from server.settings import Settings
from tests.e2e.conftest import MODEL
from tests.factories import free_port
from tests.prometheus import (
    CONFIG,
    DASHBOARD,
    RULES,
    as_prometheus_sees_it,
    binary,
    dashboard,
    dashboard_queries,
    exemplars,
    has_data,
    prometheus,
    query,
    recording_rules,
    wait_for_scrapes,
    with_local_credentials,
)
from tests.servers import gateway_process

pytestmark = pytest.mark.e2e

PRICES = {MODEL: {"prompt": 0.5, "completion": 1.5, "verifier": 0.25}}
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is 2 + 3?"}]
# One request of each kind the dashboard shows: streamed, sampled, verified, a verifier that
# fails over to a vote, a search cut short by its budget, a vote stopped by its budget (which
# saves the candidates it never drew), and a bad request.
TRAFFIC: list[dict[str, Any]] = [
    {"reasoning_strategy": "none"},
    {"reasoning_strategy": "cot", "stream": True, "stream_options": {"include_usage": True}},
    {"reasoning_strategy": "majority_vote", "reasoning_params": {"n": 2}},
    {"reasoning_strategy": "majority_vote", "reasoning_params": {"n": 4, "budget": {"tokens": 1}}},
    {"reasoning_strategy": "best_of_n", "reasoning_params": {"n": 2}},
    {
        "reasoning_strategy": "best_of_n",
        "reasoning_params": {"n": 2, "verifier": "dead_prm", "on_verifier_error": "vote"},
    },
    {
        "reasoning_strategy": "beam_search",
        "reasoning_params": {"n": 2, "beam_width": 1, "max_step_tokens": 4, "max_search_tokens": 4},
    },
]


@pytest.fixture(scope="module")
def observed() -> Iterator[tuple[str, str]]:
    """A gateway with prices and a dead PRM, and a Prometheus scraping it: (gateway, prometheus)."""
    verifiers = {
        "dead_prm": {"kind": "vllm_prm", "url": f"http://127.0.0.1:{free_port()}", "model": "m"}
    }
    with gateway_process(
        "--prices", json.dumps(PRICES), "--verifiers", json.dumps(verifiers)
    ) as gateway:
        with prometheus({"ttc-gateway": [gateway.removeprefix("http://")]}) as url:
            yield gateway, url


async def send_traffic(gateway: str) -> int:
    """Each request of TRAFFIC plus one rejected one; the generated tokens the responses report."""
    generated = 0
    async with openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key="x", max_retries=0) as client:
        for extra in TRAFFIC:
            fields = {k: v for k, v in extra.items() if k in ("stream", "stream_options")}
            body = {k: v for k, v in extra.items() if k not in fields}
            response = await client.chat.completions.create(
                model=MODEL,
                messages=QUESTION,
                max_tokens=8,
                extra_body=body,
                **fields,
            )
            if fields:
                usage = None
                async for chunk in response:
                    usage = chunk.usage or usage
            else:
                usage = response.usage
            assert usage is not None
            generated += usage.completion_tokens
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(
                model=MODEL,
                messages=QUESTION,
                max_tokens=1_000_000,
            )
    return generated


async def test_every_gateway_panel_and_recording_rule_returns_data(
    observed: tuple[str, str],
) -> None:
    gateway, url = observed
    # Two rounds with scrapes between them, so every rate over the last minute is above zero.
    generated = await send_traffic(gateway)
    wait_for_scrapes(url, "ttc-gateway")
    generated += await send_traffic(gateway)
    wait_for_scrapes(url, "ttc-gateway")

    empty = [
        f"{title}: {expr}"
        for title, expr in dashboard_queries("gateway")
        if not has_data(query(url, as_prometheus_sees_it(expr)))
    ]
    empty += [name for name in recording_rules() if not has_data(query(url, name))]
    assert empty == [], "no data for:\n" + "\n".join(empty)
    (total,) = query(url, "sum(ttc_generated_tokens_total)")
    assert float(total["value"][1]) == generated
    fallbacks = query(url, 'sum(ttc_verifier_fallbacks_total{strategy="best_of_n"})')
    assert float(fallbacks[0]["value"][1]) == 2


@contextlib.contextmanager
def app_server(app: FastAPI) -> Iterator[str]:
    """Serve `app` (its lifespan included) from a thread on a free loopback port: host:port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the app did not start"
        time.sleep(0.01)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_prometheus_stores_the_latency_exemplar_and_the_panel_finds_its_trace() -> None:
    # The gateway's own app and /metrics, its Metrics told a trace id as the server's request
    # path tells it; Prometheus as deploy/ runs it (exemplar storage on, OpenMetrics asked).
    app = create_app(Settings(), backend=ScriptedBackend())
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with app_server(app) as address, prometheus({"ttc-gateway": [address]}) as url:
        metrics: Metrics = app.state.serving.metrics
        started = time.time()
        metrics.observe("majority_vote", "scripted-model", "ok", 0.3, trace_id=trace_id)
        wait_for_scrapes(url, "ttc-gateway", scrapes=2)
        (panel,) = [p for p in dashboard()["panels"]() if p.title.startswith("End-to-end")]
        (linked,) = [q for q in panel.queries if q.exemplar]
        found = exemplars(url, as_prometheus_sees_it(linked.expr), started - 60, time.time())
    (series,) = found
    assert series["seriesLabels"]["__name__"] == "ttc_request_duration_seconds_bucket"
    assert series["seriesLabels"]["le"] == "0.5"
    assert series["seriesLabels"]["strategy"] == "majority_vote"
    (exemplar,) = series["exemplars"]
    assert exemplar["labels"] == {"trace_id": trace_id}
    assert float(exemplar["value"]) == 0.3


def test_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    # promtool checks that credential files exist: the config's own is mounted in production.
    config = tmp_path / "prometheus.yml"
    local = with_local_credentials(yaml.safe_load(CONFIG.read_text()), tmp_path)
    config.write_text(yaml.safe_dump(local))
    for args in (
        ["check", "config", str(config)],
        ["check", "rules", *map(str, RULES.glob("*.yml"))],
    ):
        checked = subprocess.run([binary("promtool"), *args], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_file_is_built_from_its_code() -> None:
    assert DASHBOARD.read_text() == dashboard()["render"](), "run: python deploy/grafana/build.py"


def test_dashboard_is_well_formed() -> None:
    built = dashboard()["build"]()
    ids = [panel["id"] for panel in built["panels"]]
    assert len(ids) == len(set(ids))
    for panel in built["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
            assert panel["datasource"]["uid"] == "prometheus"
