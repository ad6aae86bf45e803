"""Build the Grafana dashboard of the gateway and its vLLM servers as provisioning JSON.

The dashboard is code so that tests can check it: every PromQL expression below is run by the
test suite against a real Prometheus scraping a real gateway (and, in the vLLM job, real vLLM),
so a panel cannot query a metric that does not exist. Run this file after editing it:

    python deploy/grafana/build.py      # rewrites deploy/grafana/dashboards/ttc.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards" / "ttc.json"
UID = "ttc-gateway"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
# Grafana fills these in; tests substitute them before asking Prometheus.
RATE = "$__rate_interval"
BY_STRATEGY = 'strategy=~"$strategy", model=~"$model"'
ONLY_STRATEGY = 'strategy=~"$strategy"'
BY_KEY = 'key=~"$key"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str
    # Show the exemplars of the series it reads (requests' trace ids), each linked to its trace
    # through the Prometheus datasource's exemplarTraceIdDestinations (provisioning/).
    exemplar: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    # Panels about vLLM's own metrics need vLLM running, the tenants' need a gateway with API
    # keys (tests/e2e/test_keys.py); the others need only the gateway.
    source: str = "gateway"
    width: int = 12


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def per_request(metric: str, by: str = "strategy") -> str:
    """The mean of a histogram per observation: its rate of sum over its rate of count."""
    return (
        f"sum by ({by}) (rate({metric}_sum{{{BY_STRATEGY}}}[{RATE}]))"
        f" / sum by ({by}) (rate({metric}_count{{{BY_STRATEGY}}}[{RATE}]))"
    )


def per_run(counter: str) -> str:
    """A counter's rate per request that ran, by strategy.

    Requests rejected before running (bad params, unknown model) spend nothing, so the
    denominator counts the requests that ran: each observes its candidates exactly once.
    """
    return (
        f"sum by (strategy) (rate({counter}{{{BY_STRATEGY}}}[{RATE}]))"
        f" / sum by (strategy) (rate(ttc_request_candidates_count{{{BY_STRATEGY}}}[{RATE}]))"
    )


def quantile(q: float, histogram: str, by: str = "strategy", selector: str = BY_STRATEGY) -> str:
    """A histogram's `q` quantile over the rate interval, by `by`."""
    return (
        f"histogram_quantile({q}, sum by ({by}, le) "
        f"(rate({histogram}_bucket{{{selector}}}[{RATE}])))"
    )


def recorded(rule: str) -> str:
    return f"{rule}{{{BY_STRATEGY}}}"


def rate_by(counter: str, by: str = "strategy", selector: str = BY_STRATEGY) -> str:
    """A counter's rate summed by `by`."""
    braces = f"{{{selector}}}" if selector else ""
    return f"sum by ({by}) (rate({counter}{braces}[{RATE}]))"


ROWS = (
    Row(
        "Latency",
        (
            Panel(
                "End-to-end latency by strategy",
                "p50 and p95 of the whole request from recording rules over 5 minutes, and p99 "
                "over the rate interval from the histogram itself, with its exemplars: each dot "
                "is one request's latency, linked to its trace (when the gateway traces).",
                (
                    Query(
                        recorded("strategy:ttc_request_duration_seconds:p50_5m"), "p50 {{strategy}}"
                    ),
                    Query(
                        recorded("strategy:ttc_request_duration_seconds:p95_5m"), "p95 {{strategy}}"
                    ),
                    Query(
                        quantile(0.99, "ttc_request_duration_seconds"),
                        "p99 {{strategy}}",
                        exemplar=True,
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Time to first token (streamed requests)",
                "p50 and p95 from a request's arrival to its first text; search and vote "
                "strategies send their answer only once they have chosen it.",
                (
                    Query(
                        recorded("strategy:ttc_time_to_first_token_seconds:p50_5m"),
                        "p50 {{strategy}}",
                    ),
                    Query(
                        recorded("strategy:ttc_time_to_first_token_seconds:p95_5m"),
                        "p95 {{strategy}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Where a request's time goes",
                "Mean seconds per request spent waiting for the model (queue), generating and "
                "verifying. vLLM's own queue is in the vLLM row.",
                (
                    Query(
                        per_request("ttc_phase_duration_seconds", "strategy, phase"),
                        "{{strategy}} {{phase}}",
                    ),
                ),
                unit="s",
                width=24,
            ),
        ),
    ),
    Row(
        "Cost",
        (
            Panel(
                "Tokens per request",
                "Prompt, generated and verifier tokens per request that ran.",
                (
                    Query(per_run("ttc_prompt_tokens_total"), "prompt {{strategy}}"),
                    Query(per_run("ttc_generated_tokens_total"), "generated {{strategy}}"),
                    Query(per_run("ttc_verifier_tokens_total"), "verifier {{strategy}}"),
                ),
            ),
            Panel(
                "Dollars per request",
                "Mean cost of a request at the prices configured with --prices.",
                (Query(per_request("ttc_request_cost_dollars"), "{{strategy}}"),),
                unit="currencyUSD",
            ),
            Panel(
                "Dollars per hour",
                "Spend rate by strategy, from a recording rule over 5 minutes.",
                (Query(f"3600 * {recorded('strategy:ttc_cost_dollars:rate5m')}", "{{strategy}}"),),
                unit="currencyUSD",
            ),
            Panel(
                "Tokens per hour",
                "Generated and verifier tokens per hour by strategy.",
                (
                    Query(
                        f"3600 * {rate_by('ttc_generated_tokens_total')}",
                        "generated {{strategy}}",
                    ),
                    Query(
                        f"3600 * {rate_by('ttc_verifier_tokens_total')}",
                        "verifier {{strategy}}",
                    ),
                ),
            ),
        ),
    ),
    Row(
        "Test-time compute",
        (
            Panel(
                "Agreement on the chosen answer",
                "Share of a request's candidates that back the answer it chose (its answer "
                "group): the mean, and the 10th percentile of requests. Low agreement is where "
                "more samples or a verifier pay.",
                (
                    Query(per_request("ttc_answer_agreement"), "mean {{strategy}}"),
                    Query(quantile(0.1, "ttc_answer_agreement"), "p10 {{strategy}}"),
                ),
                unit="percentunit",
            ),
            Panel(
                "Candidates drawn of those allowed",
                "Candidates drawn (a search's sampled steps) over what the requests' n, policy "
                "or iterations allowed: what early stopping and budgets left undrawn.",
                (
                    Query(
                        f"{rate_by('ttc_candidates_drawn_total')}"
                        f" / {rate_by('ttc_candidates_allowed_total')}",
                        "{{strategy}}",
                    ),
                ),
                unit="percentunit",
            ),
            Panel(
                "Why votes and searches stopped",
                "Runs per second by why they stopped drawing: all_drawn, settled (an early-stop "
                "rule), budget, deadline, verifier_reading, all_finished (every partial solution "
                "finished), max_steps (a search's iterations).",
                (
                    Query(
                        rate_by("ttc_stops_total", "strategy, reason"),
                        "{{strategy}} {{reason}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Verifier scores",
                "10th, 50th and 90th percentile of the scores each verifier gave candidates (a "
                "PRM's: the last step's).",
                (
                    Query(
                        quantile(0.1, "ttc_verifier_scores", "verifier", ONLY_STRATEGY),
                        "p10 {{verifier}}",
                    ),
                    Query(
                        quantile(0.5, "ttc_verifier_scores", "verifier", ONLY_STRATEGY),
                        "p50 {{verifier}}",
                    ),
                    Query(
                        quantile(0.9, "ttc_verifier_scores", "verifier", ONLY_STRATEGY),
                        "p90 {{verifier}}",
                    ),
                ),
            ),
            Panel(
                "Thinking and answer tokens per request",
                "Of the generated tokens per request that ran: the candidates' thinking, their "
                "answers, and the probes that asked whether thinking had settled.",
                (
                    Query(per_run("ttc_thinking_tokens_total"), "thinking {{strategy}}"),
                    Query(per_run("ttc_answer_tokens_total"), "answer {{strategy}}"),
                    Query(per_run("ttc_thinking_probe_tokens_total"), "probes {{strategy}}"),
                ),
                width=24,
            ),
        ),
    ),
    Row(
        "Traffic and errors",
        (
            Panel(
                "Requests per second",
                "Answered requests by strategy and outcome; and requests running now.",
                (
                    Query(
                        rate_by("ttc_requests_total", "strategy, status"),
                        "{{strategy}} {{status}}",
                    ),
                    Query(
                        f"sum by (strategy) (ttc_requests_in_flight{{{BY_STRATEGY}}})",
                        "in flight {{strategy}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Fan-out",
                "Completions sampled, generation calls and verifier calls per request.",
                (
                    Query(per_request("ttc_request_candidates"), "candidates {{strategy}}"),
                    Query(per_run("ttc_backend_calls_total"), "backend calls {{strategy}}"),
                    Query(
                        # Verifier calls have no model label: a verifier serves every model.
                        rate_by("ttc_verifier_calls_total", selector=ONLY_STRATEGY)
                        + f" / {rate_by('ttc_request_candidates_count')}",
                        "verifier calls {{strategy}}",
                    ),
                ),
            ),
            Panel(
                "Error ratio",
                "Share of requests that failed on the server's side (backend errors, timeouts, "
                "bugs; not bad requests), from a recording rule.",
                (Query(recorded("strategy:ttc_request_errors:ratio_rate5m"), "{{strategy}}"),),
                unit="percentunit",
            ),
            Panel(
                "Fallbacks and early stops",
                "Requests answered by majority vote because their verifier failed, and "
                "requests answered before spending all they asked for (a settled vote, a "
                "budget, a search's iterations), per request.",
                (
                    Query(per_run("ttc_verifier_fallbacks_total"), "fallback {{strategy}}"),
                    Query(per_run("ttc_early_stops_total"), "early stop {{strategy}}"),
                ),
                unit="percentunit",
            ),
            Panel(
                "Tokens saved by early stops",
                "Tokens per second the candidates not drawn would have cost: the requested N "
                "less those drawn, at the drawn ones' mean.",
                (
                    Query(
                        "sum by (strategy) (rate(ttc_early_stop_saved_tokens_total"
                        '{strategy=~"$strategy", model=~"$model"}[$__rate_interval]))',
                        "{{strategy}}",
                    ),
                ),
            ),
        ),
    ),
    Row(
        "Admission, drain and retries",
        (
            Panel(
                "Admission slots and queue",
                "Generation requests holding one of --limits.max-concurrent-requests slots, and "
                "waiting in the queue for one, per gateway.",
                (
                    Query("sum by (instance) (ttc_requests_admitted)", "admitted {{instance}}"),
                    Query("sum by (instance) (ttc_requests_queued)", "queued {{instance}}"),
                ),
            ),
            Panel(
                "Turned away before running",
                "503s by reason: the queue was full, no slot freed within --limits.queue-"
                "timeout-s, or the gateway was shutting down.",
                (Query(rate_by("ttc_rejected_requests_total", "reason", ""), "{{reason}}"),),
                unit="reqps",
            ),
            Panel(
                "Draining",
                "1 while a gateway is stopping (not ready, then draining), the requests it still "
                "runs, and the new ones it turns away.",
                (
                    Query("max by (instance) (ttc_shutting_down)", "shutting down {{instance}}"),
                    Query("sum by (instance) (ttc_requests_in_flight)", "in flight {{instance}}"),
                    Query(
                        "sum by (instance) (rate(ttc_rejected_requests_total"
                        f'{{reason="shutting_down"}}[{RATE}]))',
                        "turned away {{instance}}",
                    ),
                ),
            ),
            Panel(
                "Backend retries by reason",
                "Calls to vLLM sent again because it did not process them: connection refused "
                "(connect), closed before answering (reset), 503, 429.",
                (Query(rate_by("ttc_backend_retries_total", "reason", ""), "{{reason}}"),),
                unit="reqps",
            ),
        ),
    ),
    Row(
        "Tenants",
        (
            Panel(
                "Requests per second by key",
                "Requests each API key (by its alias) was admitted for.",
                (Query(rate_by("ttc_key_requests_total", "key", BY_KEY), "{{key}}"),),
                unit="reqps",
                source="keys",
            ),
            Panel(
                "Turned away by key and reason",
                "429s by the key's limit that refused them (rpm, tpm, in_flight, usd_per_day, "
                "usd_per_month, n, strategy, search_tokens), 503s when the limit store was "
                "unreachable, and 401s (no key, or an unknown one).",
                (
                    Query(
                        rate_by("ttc_key_rejected_requests_total", "key, reason", BY_KEY),
                        "{{key}} {{reason}}",
                    ),
                    Query(rate_by("ttc_unauthorized_requests_total", "job", ""), "401 {{job}}"),
                ),
                unit="reqps",
                source="keys",
            ),
            Panel(
                "Tokens per hour by key",
                "Generated plus verifier tokens each key's requests spent: what `tpm` limits.",
                (Query(f"3600 * {rate_by('ttc_key_tokens_total', 'key', BY_KEY)}", "{{key}}"),),
                source="keys",
            ),
            Panel(
                "Dollars by key",
                "Spend rate per hour, and spend over the last day (what `usd_per_day` limits; "
                "the limit counts UTC days), at the prices of --prices.",
                (
                    Query(
                        f"3600 * {rate_by('ttc_key_cost_dollars_total', 'key', BY_KEY)}",
                        "per hour {{key}}",
                    ),
                    Query(
                        f"sum by (key) (increase(ttc_key_cost_dollars_total{{{BY_KEY}}}[1d]))",
                        "last day {{key}}",
                    ),
                ),
                unit="currencyUSD",
                source="keys",
            ),
            Panel(
                "Limit store errors",
                "Requests for which Redis could not be reached, by what became of them: "
                "admitted unmetered (--redis-on-error open), refused with 503, or not settled.",
                (
                    Query(
                        rate_by("ttc_limit_store_errors_total", "outcome", ""),
                        "{{outcome}}",
                    ),
                ),
                unit="reqps",
                source="keys",
                width=24,
            ),
        ),
    ),
    Row(
        "vLLM",
        (
            Panel(
                "vLLM queue",
                "Requests running and waiting in each vLLM server.",
                (
                    Query(
                        "sum by (job, instance) (vllm:num_requests_running)",
                        "running {{job}} {{instance}}",
                    ),
                    Query(
                        "sum by (job, instance) (vllm:num_requests_waiting)",
                        "waiting {{job}} {{instance}}",
                    ),
                ),
                source="vllm",
            ),
            Panel(
                "vLLM queue time p95",
                "How long requests wait inside vLLM before they run.",
                (
                    Query(
                        "histogram_quantile(0.95, sum by (job, le) "
                        f"(rate(vllm:request_queue_time_seconds_bucket[{RATE}])))",
                        "{{job}}",
                    ),
                ),
                unit="s",
                source="vllm",
            ),
            Panel(
                "KV-cache use",
                "Share of each vLLM server's KV cache in use.",
                (
                    Query(
                        "max by (job, instance) (vllm:kv_cache_usage_perc)", "{{job}} {{instance}}"
                    ),
                ),
                unit="percentunit",
                source="vllm",
            ),
            Panel(
                "Prefix-cache hit rate",
                "Share of prompt tokens found in the prefix cache: step-level search lives on it.",
                (
                    Query(
                        f"{rate_by('vllm:prefix_cache_hits_total', 'job, instance', '')}"
                        f" / {rate_by('vllm:prefix_cache_queries_total', 'job, instance', '')}",
                        "{{job}} {{instance}}",
                    ),
                ),
                unit="percentunit",
                source="vllm",
            ),
        ),
    ),
)


def panels() -> list[Panel]:
    """Every panel, in order."""
    return [panel for row in ROWS for panel in row.panels]


def _variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
    }


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    out: list[dict[str, Any]] = []
    next_id = 1
    y = 0
    for row in ROWS:
        out.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id, y, x = next_id + 1, y + 1, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y = 0, y + 8
            out.append(
                {
                    "id": next_id,
                    "type": panel.kind,
                    "title": panel.title,
                    "description": panel.description,
                    "datasource": DATASOURCE,
                    "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
                    "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                    "options": {"legend": {"displayMode": "table", "placement": "bottom"}},
                    "targets": [
                        {
                            "refId": chr(ord("A") + i),
                            "datasource": DATASOURCE,
                            "expr": query.expr,
                            "legendFormat": query.legend,
                            **({"exemplar": True} if query.exemplar else {}),
                        }
                        for i, query in enumerate(panel.queries)
                    ],
                }
            )
            next_id, x = next_id + 1, x + panel.width
        y += 8
    return {
        "uid": UID,
        "title": "Test-time compute gateway",
        "description": "Latency and cost per reasoning strategy, and the vLLM servers behind it.",
        "tags": ["ttc", "vllm"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                _variable("strategy", "label_values(ttc_requests_total, strategy)"),
                _variable("model", "label_values(ttc_requests_total, model)"),
                _variable("key", "label_values(ttc_key_requests_total, key)"),
            ]
        },
        "panels": out,
    }


def render() -> str:
    """The dashboard file's exact text."""
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT}")  # noqa: T201
