"""An outcome reward model on vLLM's `/classify`: `best_of_n` scored by vLLM itself.

The ORM is SmolLM2 converted to a one-label sequence classifier (`--convert classify`): vLLM's
`from_2_way_softmax` loader turns the LM head's `-` and `+` rows into one score row, `+` minus
`-`, read at the last token through a sigmoid, so `/classify` answers one probability,
P(+) / (P(+) + P(-)), per input. As with the PRM, the scores mean little; the protocol is real.

A vLLM server holds about 4 GB here (measured: the job's three servers took 11-12.5 GB together)
and the machine has 23 GB shared with other work, so this server does not run for the whole
session: it starts with this module, next to the session's three, and stops when the module
ends. vLLM serves one pooling task per server, so the PRM server (`token_classify` on
`/pooling`) cannot also answer `/classify` (it answers 501).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from backends.smollm2 import converted_model_dir
from tests.servers import gateway_process, server_processes
from tests.vllm.conftest import GENERATOR, VLLMServers, vllm_spec
from tests.vllm.scrape import Scrape, measured

ORM = "smollm2-orm"
ORM_FLAGS = [
    "--runner",
    "pooling",
    "--convert",
    "classify",
    "--hf-overrides",
    json.dumps({"classifier_from_token": ["-", "+"], "method": "from_2_way_softmax"}),
]
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is 3 + 5?"}]


@pytest.fixture(scope="module")
def orm(vllm: VLLMServers) -> Iterator[Scrape]:
    spec = vllm_spec("vllm-orm", converted_model_dir(), ORM, *ORM_FLAGS)
    with server_processes(spec, ready_timeout_s=600):
        yield Scrape(spec.url)


@pytest.fixture(scope="module")
def orm_gateway(vllm: VLLMServers, orm: Scrape) -> Iterator[str]:
    verifiers = {"orm": {"kind": "vllm_orm", "url": orm.url, "model": ORM}}
    a, _ = vllm.generators
    with gateway_process(
        "--backend", "vllm", "--vllm-url", a.url, "--verifiers", json.dumps(verifiers)
    ) as url:
        yield url


@pytest.fixture
async def orm_client(orm_gateway: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{orm_gateway}/v1", api_key="x", max_retries=0, timeout=300
    ) as c:
        yield c


async def test_best_of_n_is_scored_by_the_orm_in_one_classify_request(
    orm_client: openai.AsyncOpenAI, vllm: VLLMServers, orm: Scrape
) -> None:
    generator, _ = vllm.generators
    async with measured([generator, orm]) as cost:
        response = await orm_client.chat.completions.create(
            model=GENERATOR,
            messages=QUESTION,
            max_tokens=24,
            temperature=0.8,
            seed=3,
            extra_body={
                "reasoning_strategy": "best_of_n",
                "reasoning_params": {"n": 4, "verifier": "orm", "return_trace": True},
            },
        )

    trace: dict[str, Any] = (response.model_extra or {})["reasoning_trace"]
    scores = [c["score"] for c in trace["candidates"]]
    # One probability per candidate, from the one-label head's sigmoid.
    assert len(scores) == 4 and all(0.0 < s < 1.0 for s in scores)
    # The answer is the best-scored candidate (the earliest among equals).
    best = scores.index(max(scores))
    assert response.choices[0].message.content == trace["candidates"][best]["text"]
    # vLLM's ORM server saw one /classify request holding all four candidates...
    ran = cost.deltas[1]
    assert ran.get("http_requests_total", handler="/classify") == 1
    assert ran.get("vllm:request_success_total") == 4
    # ...and the verifier tokens the response reports are the tokens it read.
    usage = response.usage
    assert usage is not None
    verifier_tokens = int((usage.model_extra or {}).get("verifier_tokens", 0))
    assert verifier_tokens == ran.get("vllm:prompt_tokens_total") > 0
    assert usage.completion_tokens == cost.deltas[0].get("vllm:generation_tokens_total")
