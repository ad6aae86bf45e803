"""Reasoning-model support against real vLLM: SmolLM2 served as a "thinker" (conftest), whose
chat template opens a `<think>` block and whose thinking vLLM's `olmo3` parser splits off, behind
a gateway started with `--thinking.opened-by-template`.

SmolLM2 never learned to think. Asked a question, it writes its answer inside the block the
template opened and ends its turn there, or rambles on, but it never writes `</think>` unless an
example turn shows it how (`ONE_SHOT`). So the block is closed by the model only there; elsewhere
what ends the thinking is the gateway: its budget (s1's forced end) or its probes (Dynasor-CoT).
Every request is greedy (temperature 0, one seed), and probes are greedy too, so SmolLM2 writes
the same text each run; what is asserted is what the gateway did with it, read from the reply,
from the gateway's `ttc_thinking_*` counters and from the thinker's own metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from tests.factories import gateway_client
from tests.vllm.conftest import THINKER, VLLMServers
from tests.vllm.scrape import Cost, Scrape, measured

SEED = 1
# SmolLM2 answers inside the block, then ends its turn: its thinking is never closed.
SHORT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is 7 + 5?"}]
# SmolLM2 goes on well past 16 tokens without ending its turn or its thinking.
LONG: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Explain why the sky is blue."}
]
# An example turn that closes its thinking: SmolLM2 then closes its own, and vLLM's parser splits.
ONE_SHOT: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "<think>\n2 plus 2 is 4.\n</think>\n\nThe answer is 4."},
    {"role": "user", "content": "What is 7 + 5?"},
]
# The answer is in the question, and SmolLM2 thinks on about it: its probes say 42 at once.
SETTLED: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "The answer is 42. Explain step by step why the answer is 42."}
]
# What the template writes after the generation prompt: "<", "think", ">", "\n" to SmolLM2.
OPENING_TOKENS = 4


@pytest.fixture
async def client(thinking_gateway: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with gateway_client(thinking_gateway, timeout=300) as c:
        yield c


@pytest.fixture
def servers(vllm: VLLMServers, thinking_gateway: str) -> tuple[Scrape, Scrape]:
    """The thinker, then the gateway in front of it: the order of a `Cost`'s deltas."""
    return vllm.thinker, Scrape(thinking_gateway)


async def ask(
    client: openai.AsyncOpenAI,
    messages: list[ChatCompletionMessageParam],
    max_tokens: int = 64,
    **extra: Any,
) -> ChatCompletion:
    """One greedy chat completion by `none`, with `extra` as the gateway's own fields."""
    return await client.chat.completions.create(
        model=THINKER,
        messages=messages,
        max_tokens=max_tokens,
        temperature=0,
        seed=SEED,
        extra_body={"reasoning_strategy": "none", **extra},
    )


def reasoning_of(reply: ChatCompletion) -> str:
    return str((reply.choices[0].message.model_extra or {}).get("reasoning") or "")


def reasoning_tokens(reply: ChatCompletion) -> int:
    assert reply.usage is not None and reply.usage.completion_tokens_details is not None
    return reply.usage.completion_tokens_details.reasoning_tokens or 0


def stopped_early(reply: ChatCompletion) -> str:
    return str((reply.model_extra or {}).get("reasoning_stopped_early") or "")


def thinking(cost: Cost) -> tuple[int, int]:
    """The gateway's count of thinking tokens and of probe tokens over the block."""
    gateway = cost.deltas[1]
    labels = {"model": THINKER, "strategy": "none"}
    return (
        int(gateway.get("ttc_thinking_tokens_total", **labels)),
        int(gateway.get("ttc_thinking_probe_tokens_total", **labels)),
    )


def max_tokens_asked(cost: Cost, at_most: int) -> int:
    """Requests the thinker got whose `max_tokens` was at most `at_most` (a bucket bound of
    vLLM's histogram: 1, 2, 5, 10, 20, 50, ...)."""
    bucket = f"{float(at_most)}"
    return int(cost.deltas[0].get("vllm:request_params_max_tokens_bucket", le=bucket))


async def test_thinking_the_model_closes_is_split_by_vllms_parser(
    client: openai.AsyncOpenAI,
) -> None:
    reply = await ask(client, ONE_SHOT)

    thought, content = reasoning_of(reply), reply.choices[0].message.content or ""
    assert thought.strip() and content.strip(), (thought, content)
    for text in (thought, content):
        assert "<think>" not in text and "</think>" not in text
    assert "12" in content
    # vLLM 0.32 counts no reasoning tokens for a string-based parser; the gateway does.
    assert reply.usage is not None
    assert 0 < reasoning_tokens(reply) < reply.usage.completion_tokens
    assert reply.choices[0].finish_reason == "stop"


async def test_thinking_never_closed_is_all_reasoning(client: openai.AsyncOpenAI) -> None:
    """The template opened the block and SmolLM2 ended its turn inside it: no answer was
    written, and every token it wrote is a reasoning token."""
    reply = await ask(client, SHORT)

    assert reasoning_of(reply).strip()
    assert reply.choices[0].message.content == ""
    assert reply.usage is not None
    assert reasoning_tokens(reply) == reply.usage.completion_tokens > 0
    assert reply.choices[0].finish_reason == "stop"


async def test_a_thinking_budget_forces_the_block_closed(
    client: openai.AsyncOpenAI, servers: tuple[Scrape, Scrape]
) -> None:
    async with measured(servers) as cost:
        reply = await ask(client, LONG, thinking_token_budget=16)

    assert reply.usage is not None
    assert "thinking budget (16 tokens)" in stopped_early(reply)
    assert reasoning_of(reply).strip()
    # The model answered after the block the gateway closed, until max_tokens ran out.
    assert (reply.choices[0].message.content or "").strip()
    assert reply.choices[0].finish_reason == "length"
    assert thinking(cost) == (16, 0)
    assert reasoning_tokens(reply) == 16
    # Two calls to the thinker: the thinking, cut at 16 tokens, then the answer after the
    # forced end with what max_tokens left (48); together what the reply reports.
    assert cost.total("vllm:request_success_total") == 2
    assert max_tokens_asked(cost, 20) == 1 and max_tokens_asked(cost, 50) == 2
    assert cost.total("vllm:generation_tokens_total") == reply.usage.completion_tokens == 64


async def test_probes_never_take_the_thinking_past_its_budget(
    client: openai.AsyncOpenAI, servers: tuple[Scrape, Scrape]
) -> None:
    """One probe after 8 tokens; after 16 the budget ends the thinking before a second one
    could agree with it. The probe's tokens are not thinking, but they are in no answer, so the
    reply counts them as reasoning tokens."""
    control = {"thinking": {"max_tokens": 16, "probe": {"interval": 8, "agree": 2}}}
    async with measured(servers) as cost:
        reply = await ask(client, LONG, reasoning_params=control)

    thought, probes = thinking(cost)
    assert thought == 16
    assert 0 < probes <= 16
    assert "thinking budget (16 tokens)" in stopped_early(reply)
    assert reasoning_tokens(reply) == thought + probes
    assert (reply.choices[0].message.content or "").strip()
    # Two chunks of thinking, one probe, the answer.
    assert cost.total("vllm:request_success_total") == 4


async def test_probes_that_agree_end_the_thinking_early(
    client: openai.AsyncOpenAI, servers: tuple[Scrape, Scrape]
) -> None:
    control = {"thinking": {"max_tokens": 48, "probe": {"interval": 8, "agree": 2}}}
    async with measured(servers) as cost:
        reply = await ask(client, SETTLED, reasoning_params=control)

    assert "2 probes agreed" in stopped_early(reply)
    thought, probes = thinking(cost)
    # Probes come every 8 tokens and the first two agreed: 16 of the 48 tokens it had.
    assert thought == 16
    assert 0 < probes <= 2 * 16
    assert reasoning_tokens(reply) == thought + probes
    assert (reply.choices[0].message.content or "").strip()


async def test_enable_thinking_false_reaches_the_template(
    client: openai.AsyncOpenAI,
) -> None:
    """The template did not open the block: the prompt vLLM rendered is shorter by the tokens
    of `<think>\\n`."""
    thinking_on = await ask(client, SHORT, max_tokens=8)
    thinking_off = await ask(
        client, SHORT, max_tokens=8, chat_template_kwargs={"enable_thinking": False}
    )
    assert thinking_on.usage is not None and thinking_off.usage is not None
    assert thinking_off.usage.prompt_tokens == thinking_on.usage.prompt_tokens - OPENING_TOKENS


async def test_enable_thinking_false_answers_without_reasoning(
    client: openai.AsyncOpenAI,
) -> None:
    reply = await ask(client, SHORT, chat_template_kwargs={"enable_thinking": False})

    assert reasoning_of(reply) == ""
    assert "12" in (reply.choices[0].message.content or "")
    assert reasoning_tokens(reply) == 0


async def test_vllms_own_budget_closes_the_block_in_one_call(
    native_thinking_gateway: str, vllm: VLLMServers
) -> None:
    """With `--thinking.native-budget`, the budget goes to vLLM as `thinking_token_budget`:
    vLLM writes the end of thinking at it and the model answers, in the one call."""
    servers = (vllm.thinker, Scrape(native_thinking_gateway))
    async with gateway_client(native_thinking_gateway, timeout=300) as native:
        async with measured(servers) as cost:
            reply = await ask(native, LONG, thinking_token_budget=16)

    assert cost.total("vllm:request_success_total") == 1
    thought = reasoning_of(reply)
    assert thought.strip() and (reply.choices[0].message.content or "").strip()
    async with httpx.AsyncClient(base_url=vllm.thinker.url) as http:
        asked = {"model": THINKER, "prompt": thought, "add_special_tokens": False}
        counted = (await http.post("/tokenize", json=asked)).json()
    # vLLM counts the budget by its own reading of the tags, and what its parser calls
    # reasoning ends with the first token of the end it forced ("\n"): measured here, 17
    # tokens of thinking and that "\n" for a budget of 16.
    assert counted["count"] <= 16 + 2, (thought, counted)
    assert reply.usage is not None
    assert cost.total("vllm:generation_tokens_total") == reply.usage.completion_tokens == 64
    assert 0 < reasoning_tokens(reply) < reply.usage.completion_tokens
