"""Every strategy through the gateway against real vLLM, checked against vLLM's own metrics.

vLLM counts what it did; the gateway reports what it asked for. The two must agree: the
generated tokens a response reports are the tokens vLLM generated for it, the verifier tokens
are the tokens the PRM read, and one request's calls all reach one generator replica.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.vllm.conftest import GENERATOR, VLLMServers
from tests.vllm.scrape import Cost, measured

QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Solve it step by step, one step per line."},
    {"role": "user", "content": "What is 3 + 5?"},
]
SEARCH = {"verifier": "prm", "max_step_tokens": 24, "step_separator": "\n"}
STRATEGIES: list[tuple[str, dict[str, Any]]] = [
    ("none", {}),
    ("cot", {}),
    ("majority_vote", {"n": 4}),
    ("weighted_vote", {"n": 4, "verifier": "prm"}),
    ("best_of_n", {"n": 4, "verifier": "prm"}),
    ("beam_search", {**SEARCH, "n": 4, "beam_width": 2, "num_iterations": 3}),
    ("dvts", {**SEARCH, "n": 4, "beam_width": 2, "num_iterations": 3}),
    ("mcts", {**SEARCH, "iterations": 3, "k": 2, "max_depth": 3}),
    ("particle_filtering", {**SEARCH, "n": 4, "num_iterations": 3}),
]
# vLLM's KV block size in these tests (conftest's --block-size): the unit of prefix caching.
BLOCK = 32


def calls(cost: Cost, server: int, path: str = "/v1/chat/completions") -> float:
    """HTTP requests to one server: 0 and 1 are the generator replicas, 2 the PRM."""
    return cost.deltas[server].get("http_requests_total", handler=path)


def generators(cost: Cost, name: str) -> int:
    """A metric's change summed over both generator replicas."""
    return int(cost.deltas[0].get(name) + cost.deltas[1].get(name))


def verifier_tokens(usage: Any) -> int:
    return int((usage.model_extra or {}).get("verifier_tokens", 0))


async def ask(
    client: openai.AsyncOpenAI, strategy: str, params: dict[str, Any], *, stream: bool
) -> tuple[str, Any]:
    """The answer and usage of one chat request, streamed or not."""
    body: dict[str, Any] = {
        "model": GENERATOR,
        "messages": QUESTION,
        "max_tokens": 48,
        "temperature": 0.7,
        "extra_body": {"reasoning_strategy": strategy, "reasoning_params": params},
    }
    if not stream:
        response = await client.chat.completions.create(**body)
        return response.choices[0].message.content or "", response.usage
    chunks = await client.chat.completions.create(
        **body, stream=True, stream_options={"include_usage": True}
    )
    text, usage = [], None
    async for chunk in chunks:
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
        usage = chunk.usage or usage
    return "".join(text), usage


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(("strategy", "params"), STRATEGIES, ids=[s for s, _ in STRATEGIES])
async def test_strategy_usage_is_what_vllm_did(
    client: openai.AsyncOpenAI,
    vllm: VLLMServers,
    strategy: str,
    params: dict[str, Any],
    stream: bool,
    cost_report: list[dict[str, object]],
) -> None:
    started = time.monotonic()
    async with measured(vllm.all) as cost:
        text, usage = await ask(client, strategy, params, stream=stream)
    cost_report.append(
        {
            "strategy": strategy + (" (stream)" if stream else ""),
            "seconds": f"{time.monotonic() - started:.1f}",
            "vLLM calls": int(calls(cost, 0) + calls(cost, 1)),
            "sequences": generators(cost, "vllm:request_params_n_sum"),
            "prompt tok": generators(cost, "vllm:prompt_tokens_total"),
            "cached tok": generators(cost, "vllm:prefix_cache_hits_total"),
            "generated tok": generators(cost, "vllm:generation_tokens_total"),
            "PRM calls": int(calls(cost, 2, "/pooling")),
            "PRM tok": int(cost.deltas[2].get("vllm:prompt_tokens_total")),
        }
    )

    assert text.strip(), "the strategy should answer something"
    assert usage is not None
    assert usage.completion_tokens == cost.total("vllm:generation_tokens_total")
    # The PRM's prompt tokens are what the verifier read; strategies without one use none.
    assert verifier_tokens(usage) == cost.deltas[2].get("vllm:prompt_tokens_total")
    if params.get("verifier") == "prm":
        assert verifier_tokens(usage) > 0
        assert calls(cost, 2, "/pooling") >= 1
    # One request's calls stay on one replica.
    used = [replica for replica in (0, 1) if calls(cost, replica) > 0]
    assert len(used) == 1, f"calls per replica: {[calls(cost, r) for r in (0, 1)]}"


async def test_sampling_is_one_vllm_request_with_n(
    client: openai.AsyncOpenAI, vllm: VLLMServers
) -> None:
    async with measured(vllm.all) as cost:
        _, usage = await ask(client, "majority_vote", {"n": 6}, stream=False)

    assert cost.total("http_requests_total", handler="/v1/chat/completions") == 1
    assert cost.total("vllm:request_params_n_count") == 1
    assert cost.total("vllm:request_params_n_sum") == 6
    # vLLM counts each of the n sequences as a finished request, and its prompt each time.
    assert cost.total("vllm:request_success_total") == 6
    assert cost.total("vllm:prompt_tokens_total") == 6 * usage.prompt_tokens


async def test_beam_search_reuses_the_prefix_cache(
    client: openai.AsyncOpenAI, vllm: VLLMServers
) -> None:
    params = {**SEARCH, "n": 4, "beam_width": 2, "num_iterations": 3, "return_trace": True}
    async with measured(vllm.all) as cost:
        _, usage = await ask(client, "beam_search", params, stream=False)

    replica = 0 if calls(cost, 0) else 1
    generations = calls(cost, replica)
    assert generations >= 2, "a beam search of three steps makes several calls"
    # Every call after the first finds at least the prompt's first block cached.
    hits = cost.deltas[replica].get("vllm:prefix_cache_hits_total")
    assert usage.prompt_tokens >= BLOCK
    assert hits >= BLOCK * (generations - 1)


async def test_one_pooling_request_scores_all_beams_of_a_step(
    client: openai.AsyncOpenAI, vllm: VLLMServers
) -> None:
    params = {**SEARCH, "n": 4, "beam_width": 2, "num_iterations": 3, "return_trace": True}
    async with measured(vllm.all) as cost:
        response = await client.chat.completions.create(
            model=GENERATOR,
            messages=QUESTION,
            max_tokens=48,
            extra_body={"reasoning_strategy": "beam_search", "reasoning_params": params},
        )

    trace = (response.model_extra or {})["reasoning_trace"]
    steps = depth(trace["tree"])
    beams_scored = count(trace["tree"]) - 1
    assert steps >= 1
    # One PRM request per step, holding every new beam of that step.
    assert calls(cost, 2, "/pooling") == steps
    assert cost.deltas[2].get("vllm:request_success_total") == beams_scored > steps


async def test_particle_filtering_shares_a_request_per_particle_and_a_prm_call_per_step(
    client: openai.AsyncOpenAI, vllm: VLLMServers
) -> None:
    params = {**SEARCH, "n": 4, "num_iterations": 3, "return_trace": True}
    async with measured(vllm.all) as cost:
        response = await client.chat.completions.create(
            model=GENERATOR,
            messages=QUESTION,
            max_tokens=48,
            temperature=0.7,
            seed=5,
            extra_body={"reasoning_strategy": "particle_filtering", "reasoning_params": params},
        )

    trace = (response.model_extra or {})["reasoning_trace"]
    steps = trace["resampling"]
    assert steps, "at least one step was taken and scored"
    # Each step advanced every unfinished particle: N at first, then what resampling drew.
    advanced = [len(step["scores"]) for step in steps]
    assert advanced[0] == 4
    assert advanced[1:] == [len(step["drawn"]) for step in steps[:-1]]
    assert generators(cost, "vllm:request_params_n_sum") == sum(advanced)
    # One generator request per distinct prefix: copies of a particle went with `n`.
    assert calls(cost, 0) + calls(cost, 1) == len(prefixes(trace["tree"]))
    # One PRM request per step, scoring every particle advanced in it.
    assert calls(cost, 2, "/pooling") == len(steps)
    assert cost.deltas[2].get("vllm:request_success_total") == sum(advanced)


def prefixes(node: dict[str, Any], prefix: str = "") -> set[str]:
    """The distinct paths of the tree's expanded nodes: one request expanded each."""
    path = prefix + node["text"]
    below = {p for child in node["children"] for p in prefixes(child, path)}
    return below | {path} if node["children"] else below


def depth(node: dict[str, Any]) -> int:
    return max((1 + depth(child) for child in node["children"]), default=0)


def count(node: dict[str, Any]) -> int:
    return 1 + sum(count(child) for child in node["children"])


async def test_requests_spread_over_both_replicas(
    client: openai.AsyncOpenAI, vllm: VLLMServers
) -> None:
    async with measured(vllm.all) as cost:
        await asyncio.gather(*(ask(client, "none", {}, stream=False) for _ in range(4)))

    assert [calls(cost, 0), calls(cost, 1)] == [2, 2]


async def test_completions_endpoint_streams_a_vote(
    client: openai.AsyncOpenAI, vllm: VLLMServers
) -> None:
    async with measured(vllm.all) as cost:
        chunks = await client.completions.create(
            model=GENERATOR,
            # Mid-sentence: after a bare "Answer:" SmolLM2 often ends at once, and a vote of
            # three empty candidates is rightly empty.
            prompt="Question: What is 2 + 6?\nAnswer: 2 + 6 =",
            max_tokens=32,
            temperature=0.7,
            seed=7,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"reasoning_strategy": "majority_vote", "reasoning_params": {"n": 3}},
        )
        text: list[str] = []
        usage = None
        async for chunk in chunks:
            text.extend(choice.text for choice in chunk.choices)
            usage = chunk.usage or usage

    assert "".join(text).strip()
    assert usage is not None
    assert usage.completion_tokens == cost.total("vllm:generation_tokens_total")
    assert cost.total("http_requests_total", handler="/v1/completions") == 1
