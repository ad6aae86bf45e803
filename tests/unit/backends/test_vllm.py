"""`VLLMBackend` against `httpx.MockTransport`: the exact request bodies, parsing, error mapping."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from backends.base import (
    ChatMessage,
    ChatPrompt,
    SamplingParams,
    StreamDelta,
    StreamEnd,
    TextPrompt,
)
from backends.errors import BackendResponseError, BackendTimeout, BackendUnavailable
from backends.vllm import VLLMBackend
from backends.vllm_session import VLLMSession

MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
CHAT = ChatPrompt((ChatMessage("user", "2+2?"),))
Handler = Callable[[httpx.Request], httpx.Response]


def backend(handler: Handler, urls: tuple[str, ...] = ("http://vllm-a:8000",)) -> VLLMBackend:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return VLLMBackend(client, urls, MODEL)


def session(handler: Handler, urls: tuple[str, ...] = ("http://vllm-a:8000",)) -> VLLMSession:
    """A session of a backend on these replicas, without a request id."""
    return backend(handler, urls).session()


def body(request: httpx.Request) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(request.content)
    return data


def chat_response(*texts: str, token_ids: bool = True) -> dict[str, Any]:
    choices = []
    for i, text in enumerate(texts):
        choice: dict[str, Any] = {
            "index": i,
            "message": {"role": "assistant", "content": text, "reasoning": None},
            "logprobs": None,
            "finish_reason": "stop" if i == 0 else "length",
        }
        if token_ids:
            choice["token_ids"] = list(range(len(text.split())))
        choices.append(choice)
    completion = sum(len(t.split()) for t in texts)
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": MODEL,
        "choices": choices,
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": completion,
            "total_tokens": 12 + completion,
        },
    }


async def test_chat_generation_request_and_parse() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=chat_response("four is it", "4"))

    params = SamplingParams(max_tokens=32, temperature=0.7, top_p=0.9, n=2, stop=("\n\n",), seed=3)
    generation = await backend(handler).session("req-1").generate(CHAT, params)
    (request,) = seen
    assert request.url == "http://vllm-a:8000/v1/chat/completions"
    # Each call gets its own id under the request's: vLLM rejects ids already running.
    assert request.headers["x-request-id"] == "req-1-0"
    assert body(request) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "2+2?"}],
        "n": 2,
        "max_tokens": 32,
        "temperature": 0.7,
        "top_p": 0.9,
        "return_token_ids": True,
        "stop": ["\n\n"],
        "include_stop_str_in_output": False,
        "seed": 3,
    }
    assert [c.text for c in generation.completions] == ["four is it", "4"]
    assert [c.tokens for c in generation.completions] == [3, 1]
    assert [c.finish_reason for c in generation.completions] == ["stop", "length"]
    assert generation.prompt_tokens == 12


async def test_continuation_and_logprobs_fields() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(body(request))
        response = chat_response("x")
        response["choices"][0]["logprobs"] = {
            "content": [
                {
                    "token": "x",
                    "logprob": -0.1,
                    "bytes": [120],
                    "top_logprobs": [{"token": "x", "logprob": -0.1, "bytes": [120]}],
                }
            ]
        }
        return httpx.Response(200, json=response)

    prompt = ChatPrompt(
        (ChatMessage("user", "q"), ChatMessage("assistant", "Step 1:")), continue_final_message=True
    )
    params = SamplingParams(max_tokens=8, logprobs=1, stop=("\n\n",), include_stop=True)
    generation = await session(handler).generate(prompt, params)
    sent = seen[0]
    assert sent["continue_final_message"] is True
    assert sent["add_generation_prompt"] is False
    assert sent["logprobs"] is True and sent["top_logprobs"] == 1
    assert sent["include_stop_str_in_output"] is True
    (lp,) = generation.completions[0].logprobs or ()
    assert (lp.token, lp.logprob, lp.top) == ("x", -0.1, (("x", -0.1),))


async def test_text_prompt_uses_completions_with_integer_logprobs() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        sent = body(request)
        assert request.url.path == "/v1/completions"
        assert sent["prompt"] == "2+2=" and sent["logprobs"] == 0
        return httpx.Response(
            200,
            json={
                "choices": [
                    {
                        "index": 0,
                        "text": " 4",
                        "finish_reason": "stop",
                        "token_ids": [7],
                        "logprobs": {
                            "tokens": [" 4"],
                            "token_logprobs": [-0.2],
                            "top_logprobs": [{" 4": -0.2}],
                            "text_offset": [4],
                        },
                    }
                ],
                "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5},
            },
        )

    generation = await session(handler).generate(
        TextPrompt("2+2="), SamplingParams(max_tokens=4, logprobs=0)
    )
    completion = generation.completions[0]
    assert completion.text == " 4" and completion.tokens == 1
    assert completion.logprobs is not None and completion.logprobs[0].top == ((" 4", -0.2),)


async def test_missing_token_ids_for_several_samples_is_a_clear_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=chat_response("a", "b", token_ids=False))

    with pytest.raises(BackendResponseError, match="return_token_ids"):
        await session(handler).generate(CHAT, SamplingParams(max_tokens=4, n=2))


async def test_single_sample_without_token_ids_uses_usage() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=chat_response("a b", token_ids=False))

    generation = await session(handler).generate(CHAT, SamplingParams(max_tokens=4))
    assert generation.completions[0].tokens == 2


async def test_stream_parses_chunks_and_counts_tokens() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "token_ids": []}]},
        {"choices": [{"index": 0, "delta": {"content": "Hel"}, "token_ids": [1]}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": "lo"},
                    "token_ids": [2],
                    "finish_reason": "length",
                }
            ]
        },
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}},
    ]
    payload = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        sent = body(request)
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
        return httpx.Response(200, text=payload, headers={"content-type": "text/event-stream"})

    events = [e async for e in session(handler).stream(CHAT, SamplingParams(max_tokens=2))]
    assert events == [
        StreamDelta(0, "Hel"),
        StreamDelta(0, "lo"),
        StreamEnd(finish_reasons=("length",), prompt_tokens=5, completion_tokens=(2,)),
    ]


async def test_error_inside_stream_is_raised() -> None:
    payload = 'data: {"error": {"message": "engine died", "code": 500}}\n\n'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=payload)

    with pytest.raises(BackendResponseError, match="engine died"):
        async for _ in session(handler).stream(CHAT, SamplingParams(max_tokens=2)):
            pass


async def test_score_reads_echoed_continuation_tokens() -> None:
    prompt_text = "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/tokenize":
            assert body(request)["add_generation_prompt"] is True
            return httpx.Response(
                200, json={"count": 3, "max_model_len": 2048, "tokens": [1, 2, 3]}
            )
        if request.url.path == "/detokenize":
            assert body(request)["tokens"] == [1, 2, 3]
            return httpx.Response(200, json={"prompt": prompt_text})
        sent = body(request)
        assert sent["echo"] is True and sent["max_tokens"] == 1 and sent["logprobs"] == 0
        assert sent["prompt"] == prompt_text + "Paris."
        assert sent["add_special_tokens"] is False
        n = len(prompt_text)
        return httpx.Response(
            200,
            json={
                "choices": [
                    {
                        "index": 0,
                        "text": prompt_text + "Paris.\n",
                        "finish_reason": "length",
                        "logprobs": {
                            "tokens": ["<prompt>", "Paris", ".", "\n"],
                            "token_logprobs": [None, -0.5, -0.25, -3.0],
                            "top_logprobs": [None, None, None, None],
                            "text_offset": [0, n, n + 5, n + 6],
                        },
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            },
        )

    scored = await session(handler).prompt_logprobs(CHAT, "Paris.")
    assert calls == ["/tokenize", "/detokenize", "/v1/completions"]
    assert [t.token for t in scored.logprobs] == ["Paris", "."]
    assert scored.total_logprob == -0.75
    assert scored.prompt_tokens == 3


async def test_count_tokens() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert body(request) == {
            "model": MODEL,
            "prompt": "hello there",
            "add_special_tokens": False,
        }
        return httpx.Response(200, json={"count": 2, "max_model_len": 2048, "tokens": [5, 6]})

    assert await session(handler).count_tokens("hello there") == 2


async def test_sessions_pin_one_replica_and_rotate() -> None:
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return httpx.Response(200, json=chat_response("x"))

    shared = backend(handler, ("http://a:1", "http://b:1"))
    for _ in range(2):
        session = shared.session()
        for _ in range(3):
            await session.generate(CHAT, SamplingParams(max_tokens=1))
    assert hosts == ["a", "a", "a", "b", "b", "b"]


async def test_model_is_discovered_when_not_configured() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models"
        return httpx.Response(200, json={"object": "list", "data": [{"id": "served-model"}]})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    discovered = VLLMBackend(client, ["http://a:1"])
    assert await discovered.model_name() == "served-model"
    await discovered.check_ready()


@pytest.mark.parametrize(
    ("raise_or_respond", "error", "status"),
    [
        (httpx.ConnectError("refused"), BackendUnavailable, None),
        (httpx.ReadTimeout("slow"), BackendTimeout, None),
        (httpx.Response(503, json={"error": {"message": "overloaded"}}), BackendUnavailable, None),
        (
            httpx.Response(400, json={"error": {"message": "too long", "type": "BadRequestError"}}),
            BackendResponseError,
            400,
        ),
        (httpx.Response(500, text="<html>oops</html>"), BackendResponseError, 500),
        (httpx.Response(200, text="not json"), BackendResponseError, None),
    ],
)
async def test_errors_are_mapped(
    raise_or_respond: Exception | httpx.Response, error: type[Exception], status: int | None
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(raise_or_respond, Exception):
            raise raise_or_respond
        return raise_or_respond

    with pytest.raises(error) as info:
        await session(handler).generate(CHAT, SamplingParams(max_tokens=1))
    if status is not None:
        assert getattr(info.value, "status_code", None) == status


async def test_ready_while_any_replica_serves_the_model() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "c":
            raise httpx.ConnectError("refused")
        model = MODEL if request.url.host == "a" else "other"
        return httpx.Response(200, json={"data": [{"id": model}]})

    await backend(handler, ("http://a:1", "http://b:1", "http://c:1")).check_ready()
    with pytest.raises(BackendUnavailable, match="other"):
        await backend(handler, ("http://b:1", "http://c:1")).check_ready()


async def test_ready_does_not_hang_on_a_hung_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from backends import vllm

    monkeypatch.setattr(vllm, "_PROBE_TIMEOUT_S", 0.05)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "hung":
            await asyncio.sleep(30)
        return httpx.Response(200, json={"data": [{"id": MODEL}]})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    await asyncio.wait_for(
        VLLMBackend(client, ["http://hung:1", "http://a:1"], MODEL).check_ready(), 5
    )


async def test_flat_error_chunk_is_raised() -> None:
    payload = 'data: {"object": "error", "message": "overloaded", "code": 503}\n\n'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=payload)

    with pytest.raises(BackendResponseError, match="overloaded"):
        async for _ in session(handler).stream(CHAT, SamplingParams(max_tokens=2)):
            pass


async def test_reasoning_parser_output_is_kept() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        response = chat_response("4")
        response["choices"][0]["message"]["reasoning"] = "2 and 2 make 4"
        return httpx.Response(200, json=response)

    generation = await session(handler).generate(CHAT, SamplingParams(max_tokens=8))
    assert generation.completions[0].reasoning == "2 and 2 make 4"


async def test_error_messages_name_no_internal_address() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(BackendUnavailable) as info:
        await session(handler, ("http://10.1.2.3:8000",)).generate(
            CHAT, SamplingParams(max_tokens=1)
        )
    assert "10.1.2.3" not in str(info.value)


def refusing(*down: str, respond: Handler | None = None) -> tuple[Handler, list[str]]:
    """A handler whose hosts in `down` refuse connections; it records every host it sees."""
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        if request.url.host in down:
            raise httpx.ConnectError("connection refused")
        return (respond or (lambda _: httpx.Response(200, json=chat_response("x"))))(request)

    return handler, hosts


async def test_a_refused_connection_moves_the_session_to_another_replica() -> None:
    handler, hosts = refusing("a")
    shared = backend(handler, ("http://a:1", "http://b:1"))
    session = shared.session()
    for _ in range(3):
        await session.generate(CHAT, SamplingParams(max_tokens=1))
    # Later sessions skip the replica that refused, while it is marked down.
    await shared.session().generate(CHAT, SamplingParams(max_tokens=1))
    assert hosts == ["a", "b", "b", "b", "b"]


async def test_a_down_replica_gets_its_turn_again_later(monkeypatch: pytest.MonkeyPatch) -> None:
    from backends import vllm

    monkeypatch.setattr(vllm, "_DOWN_S", 0.0)
    handler, hosts = refusing("a")
    shared = backend(handler, ("http://a:1", "http://b:1"))
    for _ in range(2):
        await shared.session().generate(CHAT, SamplingParams(max_tokens=1))
    assert hosts == ["a", "b", "b"]
    await shared.session().generate(CHAT, SamplingParams(max_tokens=1))
    assert hosts[3] == "a"


async def test_a_stream_fails_over_before_it_starts() -> None:
    payload = 'data: {"choices": [{"index": 0, "delta": {"content": "hi"}, "token_ids": [1], '
    payload += '"finish_reason": "stop"}]}\n\n'
    payload += 'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}\n\n'
    payload += "data: [DONE]\n\n"
    handler, hosts = refusing("a", respond=lambda _: httpx.Response(200, text=payload))
    session = backend(handler, ("http://a:1", "http://b:1")).session()
    events = [e async for e in session.stream(CHAT, SamplingParams(max_tokens=2))]
    assert events[0] == StreamDelta(0, "hi")
    assert hosts == ["a", "b"]


async def test_every_replica_refusing_is_unavailable_after_one_try_each() -> None:
    handler, hosts = refusing("a", "b", "c")
    session = backend(handler, ("http://a:1", "http://b:1", "http://c:1")).session()
    with pytest.raises(BackendUnavailable, match="unreachable"):
        await session.generate(CHAT, SamplingParams(max_tokens=1))
    assert sorted(hosts) == ["a", "b", "c"]


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("closed mid-response")],
)
async def test_a_call_that_may_have_run_is_not_sent_again(failure: Exception) -> None:
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        raise failure

    session = backend(handler, ("http://a:1", "http://b:1")).session()
    with pytest.raises((BackendTimeout, BackendUnavailable)):
        await session.generate(CHAT, SamplingParams(max_tokens=1))
    # Sampling again elsewhere would double the work and the bill.
    assert hosts == ["a"]


async def test_ready_probe_marks_a_refusing_replica_down() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a":
            raise httpx.ConnectError("refused")
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": MODEL}]})
        return httpx.Response(200, json=chat_response("x"))

    shared = backend(handler, ("http://a:1", "http://b:1"))
    await shared.check_ready()
    hosts = []
    for _ in range(2):
        session = shared.session()
        hosts.append(session.replica)
    assert hosts == ["http://b:1", "http://b:1"]


async def test_model_is_discovered_from_any_live_replica() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a":
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json={"object": "list", "data": [{"id": "served-model"}]})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    discovered = VLLMBackend(client, ["http://a:1", "http://b:1"])
    assert await discovered.model_name() == "served-model"
