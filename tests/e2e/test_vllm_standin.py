"""The gateway's vLLM backend over real loopback HTTP against two stand-in vLLM replicas.

The stand-in checks every request's shape (see bench/vllm_standin/checks.py); these tests drive the
gateway process with the openai client and then read what the stand-ins received.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from bench.vllm_standin.answers import ANSWER, PRM_MODEL, SERVED_MODEL
from bench.vllm_standin.inprocess import run_standin
from bench.vllm_standin.state import StandIn
from tests.exposition import Samples
from tests.factories import free_port, gateway_client
from tests.servers import gateway_process

pytestmark = pytest.mark.e2e

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is 3 + 4?"}]


# A beam search whose steps end at a newline, scored by the stand-in's PRM.
BEAMS = {"n": 4, "beam_width": 2, "verifier": "prm", "step_separator": "\n"}
OTHER_MODEL = "standin/Other-Model"
ROUTING_HEADER = "X-SMG-Routing-Key"


@pytest.fixture(scope="module")
def replicas() -> Iterator[tuple[StandIn, StandIn]]:
    with run_standin() as first, run_standin() as second:
        yield first, second


@pytest.fixture(scope="module")
def other() -> Iterator[StandIn]:
    """The one replica of a further model the gateway serves."""
    with run_standin(OTHER_MODEL) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(replicas: tuple[StandIn, StandIn], other: StandIn) -> Iterator[str]:
    first, second = replicas
    # No --model: the gateway discovers the served name from /v1/models.
    verifiers = {
        "prm": {"kind": "vllm_prm", "url": first.url, "model": PRM_MODEL},
        "dead_prm": {"kind": "vllm_prm", "url": f"http://127.0.0.1:{free_port()}", "model": "m"},
    }
    with gateway_process(
        "--backend",
        "vllm",
        "--vllm-url",
        first.url,
        "--vllm-url",
        second.url,
        "--vllm.timeout-s",
        "1",
        "--verifiers",
        json.dumps(verifiers),
        "--vllm.routing-header",
        ROUTING_HEADER,
        "--models",
        json.dumps({OTHER_MODEL: {"vllm_url": [other.url]}}),
    ) as url:
        yield url


@pytest.fixture
async def client(
    gateway: str, replicas: tuple[StandIn, StandIn]
) -> AsyncIterator[openai.AsyncOpenAI]:
    for replica in replicas:
        replica.requests.clear()
    async with gateway_client(gateway) as c:
        yield c
    for replica in replicas:
        assert replica.violations == []


async def ask(
    client: openai.AsyncOpenAI,
    strategy: str,
    params: Mapping[str, object] | None = None,
    model: str = SERVED_MODEL,
    **fields: Any,
) -> ChatCompletion:
    """QUESTION, with at most 50 tokens, answered by `strategy` with `params`."""
    body: dict[str, object] = {"reasoning_strategy": strategy}
    if params is not None:
        body["reasoning_params"] = dict(params)
    response: ChatCompletion = await client.chat.completions.create(
        model=model, messages=QUESTION, max_tokens=50, extra_body=body, **fields
    )
    return response


def received(replicas: tuple[StandIn, StandIn], path: str) -> list[dict[str, Any]]:
    return [r.body for replica in replicas for r in replica.requests if r.path == path]


async def test_chat_reaches_vllm_with_the_right_shape(
    client: openai.AsyncOpenAI, replicas: tuple[StandIn, StandIn]
) -> None:
    response = await client.chat.completions.create(
        model=SERVED_MODEL,
        messages=QUESTION,
        max_tokens=50,
        temperature=0.5,
        n=2,
        seed=1,
        stop=["\n\n"],
        extra_headers={"X-Request-Id": "trace-me"},
    )
    assert [c.message.content for c in response.choices] == [ANSWER, ANSWER]
    assert response.usage is not None
    assert response.usage.prompt_tokens == 5
    assert response.usage.completion_tokens == 2 * len(ANSWER.split(" "))
    (body,) = received(replicas, "/v1/chat/completions")
    assert body == {
        "model": SERVED_MODEL,
        "messages": QUESTION,
        "n": 2,
        "max_tokens": 50,
        "temperature": 0.5,
        "top_p": 1.0,
        "return_token_ids": True,
        "stop": ["\n\n"],
        "include_stop_str_in_output": False,
        "seed": 1,
    }
    headers = [r.headers for replica in replicas for r in replica.requests]
    assert headers[0]["x-request-id"] == "chatcmpl-trace-me-0"


async def test_stream_through_vllm(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=SERVED_MODEL,
        messages=QUESTION,
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
    assert text == ANSWER
    assert usage is not None and usage.completion_tokens == len(ANSWER.split(" "))


async def test_completions_through_vllm(
    client: openai.AsyncOpenAI, replicas: tuple[StandIn, StandIn]
) -> None:
    response = await client.completions.create(model=SERVED_MODEL, prompt="3 + 4 =", max_tokens=3)
    assert response.choices[0].text == " ".join(ANSWER.split(" ")[:3])
    assert response.choices[0].finish_reason == "length"
    (body,) = received(replicas, "/v1/completions")
    assert body["prompt"] == "3 + 4 =" and body["max_tokens"] == 3


async def test_cot_through_vllm(
    client: openai.AsyncOpenAI, replicas: tuple[StandIn, StandIn]
) -> None:
    response = await ask(client, "cot")
    message = response.choices[0].message
    assert message.content == "7"
    assert (message.model_extra or {}).get("reasoning") == "First add the numbers.\n"
    (body,) = received(replicas, "/v1/chat/completions")
    messages = body["messages"]
    assert isinstance(messages, list) and messages[0]["role"] == "system"
    assert received(replicas, "/tokenize") == [
        {"model": SERVED_MODEL, "prompt": "7", "add_special_tokens": False}
    ]
    assert response.usage is not None and response.usage.completion_tokens_details is not None
    generated = len(ANSWER.split(" "))
    assert response.usage.completion_tokens_details.reasoning_tokens == generated - 1


async def test_assistant_prefix_is_continued(
    client: openai.AsyncOpenAI, replicas: tuple[StandIn, StandIn]
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        *QUESTION,
        {"role": "assistant", "content": "Let me think."},
    ]
    await client.chat.completions.create(model=SERVED_MODEL, messages=messages, max_tokens=5)
    (body,) = received(replicas, "/v1/chat/completions")
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False


async def test_responses_through_vllm(
    client: openai.AsyncOpenAI, replicas: tuple[StandIn, StandIn]
) -> None:
    history: Any = [
        {"role": "user", "content": "What is 1 + 1?"},
        {
            "type": "reasoning",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "1+1"}],
        },
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "What is 3 + 4?"},
    ]
    fields: dict[str, Any] = {
        "model": SERVED_MODEL,
        "input": history,
        "max_output_tokens": 50,
        "extra_body": {"reasoning_strategy": "cot"},
    }
    response = await client.responses.create(**fields)
    assert response.output_text == "7"
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == "First add the numbers.\n"
    (body,) = received(replicas, "/v1/chat/completions")
    # cot's instruction first, then the history, the earlier answer with its reasoning.
    assert body["messages"][1:] == [
        {"role": "user", "content": "What is 1 + 1?"},
        {"role": "assistant", "content": "2", "reasoning": "1+1"},
        {"role": "user", "content": "What is 3 + 4?"},
    ]
    async with client.responses.stream(**fields) as stream:
        final = await stream.get_final_response()
    assert final.output_text == "7"
    assert final.usage is not None and final.usage == response.usage


async def test_requests_spread_over_replicas(
    client: openai.AsyncOpenAI, replicas: tuple[StandIn, StandIn]
) -> None:
    for _ in range(4):
        await client.chat.completions.create(model=SERVED_MODEL, messages=QUESTION, max_tokens=5)
    assert [len(r.requests) for r in replicas] == [2, 2]


async def test_vllm_rejection_is_400_with_its_message(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model=SERVED_MODEL, messages=[{"role": "user", "content": "TOO_LONG"}]
        )
    assert "maximum context length" in str(info.value)


async def test_vllm_timeout_is_504(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(
            model=SERVED_MODEL, messages=[{"role": "user", "content": "SLOW"}]
        )
    assert info.value.status_code == 504


async def test_unreachable_vllm_is_503() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with gateway_process("--backend", "vllm", "--vllm-url", dead, "--model", "m") as url:
        async with httpx.AsyncClient(base_url=url) as http:
            ready = await http.get("/ready")
            assert (await http.get("/health")).status_code == 200
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
            with pytest.raises(openai.APIStatusError) as info:
                await client.chat.completions.create(model="m", messages=QUESTION)
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "backend_unavailable"
    assert info.value.status_code == 503


async def test_a_dead_replica_is_skipped(replicas: tuple[StandIn, StandIn]) -> None:
    live, _ = replicas
    live.requests.clear()
    dead = f"http://127.0.0.1:{free_port()}"
    args = ("--backend", "vllm", "--vllm-url", dead, "--vllm-url", live.url)
    with gateway_process(*args) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            ready = await http.get("/ready")
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
            for _ in range(4):
                response = await client.chat.completions.create(
                    model=SERVED_MODEL,
                    messages=QUESTION,
                    max_tokens=5,
                )
                assert response.choices[0].message.content
    assert ready.status_code == 200
    assert len(received(replicas, "/v1/chat/completions")) == 4


async def test_best_of_n_scores_with_the_vllm_prm(
    client: openai.AsyncOpenAI, replicas: tuple[StandIn, StandIn]
) -> None:
    params = {"n": 4, "verifier": "prm", "aggregation": "min", "return_trace": True}
    response = await ask(client, "best_of_n", params)
    assert response.choices[0].message.content == ANSWER
    (generation,) = received(replicas, "/v1/chat/completions")
    assert generation["n"] == 4
    (pooling,) = received(replicas, "/pooling")
    inputs = pooling["input"]
    assert isinstance(inputs, list) and len(inputs) == 4
    # ANSWER has one blank-line-free step, so one tag after it, inside the Qwen template.
    assert all(text.count("<extra_0>") == 1 for text in inputs)
    trace = (response.model_extra or {})["reasoning_trace"]
    assert [c["step_scores"] for c in trace["candidates"]] == [[0.9]] * 4
    usage = response.usage
    assert usage is not None and (usage.model_extra or {})["verifier_tokens"] > 0


async def test_dead_verifier_is_502_or_a_flagged_vote(client: openai.AsyncOpenAI) -> None:
    params: dict[str, object] = {"n": 3, "verifier": "dead_prm"}
    body = {"reasoning_strategy": "weighted_vote", "reasoning_params": params}
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(
            model=SERVED_MODEL, messages=QUESTION, max_tokens=50, extra_body=body
        )
    assert info.value.status_code == 502
    params["on_verifier_error"] = "vote"
    response = await client.chat.completions.create(
        model=SERVED_MODEL, messages=QUESTION, max_tokens=50, extra_body=body
    )
    assert response.choices[0].message.content == ANSWER
    fallback = (response.model_extra or {}).get("reasoning_fallback")
    assert isinstance(fallback, str) and "dead_prm" in fallback and "majority vote" in fallback


async def test_beam_search_continues_prefixes_one_request_each(
    client: openai.AsyncOpenAI, replicas: tuple[StandIn, StandIn]
) -> None:
    response = await ask(client, "beam_search", {**BEAMS, "return_trace": True})
    assert response.choices[0].message.content == ANSWER
    generations = received(replicas, "/v1/chat/completions")
    # First step: one request for all four beams, no prefix.
    assert generations[0]["n"] == 4 and "continue_final_message" not in generations[0]
    assert generations[0]["stop"] == ["\n"] and generations[0]["include_stop_str_in_output"] is True
    # Second step: the two kept beams share one prefix, so one request carries all 2 x 2 children,
    # and it continues that prefix as the assistant's own message.
    assert len(generations) == 2
    assert generations[1]["n"] == 4
    assert generations[1]["messages"][-1] == {
        "role": "assistant",
        "content": "First add the numbers.\n",
    }
    assert generations[1]["continue_final_message"] is True
    # One verifier request per step, and all calls of the search on one replica.
    assert len(received(replicas, "/pooling")) == 2
    assert (
        sum(1 for r in replicas if any(q.path == "/v1/chat/completions" for q in r.requests)) == 1
    )
    trace = (response.model_extra or {})["reasoning_trace"]
    assert response.usage is not None and response.usage.completion_tokens == trace["tokens"]


async def test_the_routing_key_reaches_every_call_of_a_search(
    client: openai.AsyncOpenAI, replicas: tuple[StandIn, StandIn]
) -> None:
    # Two searches judged by llm_judge on the gateway's backend, both sent with one client id.
    judged = BEAMS | {"verifier": "llm_judge"}
    keys = []
    for _ in range(2):
        for replica in replicas:
            replica.requests.clear()
        await ask(client, "beam_search", judged, extra_headers={"X-Request-Id": "route-me"})
        calls = [r for replica in replicas for r in replica.requests]
        assert len(calls) >= 4
        assert any(r.headers.get("x-request-id") is None for r in calls), "no judge call"
        # A router in front of vLLM keys on it, so every call of the request, the judge's too,
        # lands on one engine.
        (key,) = {r.headers.get(ROUTING_HEADER.lower()) for r in calls}
        assert key is not None and "route-me" not in key
        keys.append(key)
    # The server's key, not the client's id: reusing an id does not pin requests together.
    assert keys[0] != keys[1]


async def test_a_further_model_is_served_on_its_own_replicas(
    client: openai.AsyncOpenAI, replicas: tuple[StandIn, StandIn], other: StandIn
) -> None:
    other.requests.clear()
    listed = [model.id async for model in client.models.list()]
    assert listed == [SERVED_MODEL, OTHER_MODEL]
    response = await ask(client, "majority_vote", {"n": 3}, model=OTHER_MODEL)
    assert response.model == OTHER_MODEL
    assert response.choices[0].message.content == ANSWER
    assert [r.body["model"] for r in other.requests] == [OTHER_MODEL]
    assert received(replicas, "/v1/chat/completions") == []
    assert other.violations == []
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(model="no/such-model", messages=QUESTION)
    assert SERVED_MODEL in str(info.value) and OTHER_MODEL in str(info.value)


async def test_calls_vllm_turns_away_are_retried_and_counted(
    gateway: str, client: openai.AsyncOpenAI, replicas: tuple[StandIn, StandIn]
) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        before = Samples.parse((await http.get("/metrics")).text)
        # One 503 on each replica: the call moves to the other one, then waits and tries again.
        for replica in replicas:
            replica.faults[:] = [503]
        response = await ask(client, "majority_vote", {"n": 3})
        assert response.choices[0].message.content == ANSWER
        spent = Samples.parse((await http.get("/metrics")).text) - before
    assert spent.get("ttc_backend_retries_total", reason="503") == 2
    # Counted once among the calls, however many times it was sent.
    assert spent.get("ttc_backend_calls_total", outcome="ok") == 1


async def test_a_call_turned_away_past_its_retries_is_a_clean_503(
    client: openai.AsyncOpenAI, replicas: tuple[StandIn, StandIn]
) -> None:
    for replica in replicas:
        replica.faults[:] = [503] * 4
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(model=SERVED_MODEL, messages=QUESTION, max_tokens=5)
    for replica in replicas:
        replica.faults.clear()
    assert info.value.status_code == 503
    error = info.value.body
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "backend_unavailable"
