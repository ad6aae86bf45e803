"""`VLLMBackend` against loopback servers: the exact request bodies, parsing, error mapping,
retries, replica choice and routing headers."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Awaitable, Sequence
from typing import Any

import httpx
import pydantic
import pytest

from backends.base import (
    ChatMessage,
    ChatPrompt,
    SamplingParams,
    StreamDelta,
    StreamEnd,
    TextPrompt,
    TokenLogprob,
    TokenPrompt,
)
from backends.errors import BackendResponseError, BackendTimeout, BackendUnavailable
from backends.routing import routing_key_set
from backends.vllm import VLLMBackend
from backends.vllm_client import VLLMClientSettings
from backends.vllm_session import VLLMSession
from tests.loopback import Handler, Loopback

MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
CHAT = ChatPrompt((ChatMessage("user", "2+2?"),))


async def backend(
    servers: Loopback,
    handler: Handler,
    *names: str,
    down: Sequence[str] = (),
    model: str | None = MODEL,
    **settings: float | int | str | None,
) -> VLLMBackend:
    """A backend on replicas named `names` (one, "vllm-a:8000", by default)."""
    urls = await servers.serve(handler, *(names or ("vllm-a:8000",)), down=down)
    return VLLMBackend(servers.client(**settings), urls, model)


async def session(servers: Loopback, handler: Handler, *names: str) -> VLLMSession:
    """A session of a backend on these replicas, without a request id."""
    return (await backend(servers, handler, *names)).session()


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


async def test_chat_generation_request_and_parse(servers: Loopback) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=chat_response("four is it", "4"))

    params = SamplingParams(max_tokens=32, temperature=0.7, top_p=0.9, n=2, stop=("\n\n",), seed=3)
    generation = await (await backend(servers, handler)).session("req-1").generate(CHAT, params)
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


async def test_continuation_and_logprobs_fields(servers: Loopback) -> None:
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
    generation = await (await session(servers, handler)).generate(prompt, params)
    sent = seen[0]
    assert sent["continue_final_message"] is True
    assert sent["add_generation_prompt"] is False
    assert sent["logprobs"] is True and sent["top_logprobs"] == 1
    assert sent["include_stop_str_in_output"] is True
    (lp,) = generation.completions[0].logprobs or ()
    assert (lp.token, lp.logprob, lp.top) == ("x", -0.1, (("x", -0.1),))


async def test_text_prompt_uses_completions_with_integer_logprobs(servers: Loopback) -> None:
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

    generation = await (await session(servers, handler)).generate(
        TextPrompt("2+2="), SamplingParams(max_tokens=4, logprobs=0)
    )
    completion = generation.completions[0]
    assert completion.text == " 4" and completion.tokens == 1
    assert completion.logprobs is not None and completion.logprobs[0].top == ((" 4", -0.2),)


async def test_missing_token_ids_for_several_samples_is_a_clear_error(servers: Loopback) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=chat_response("a", "b", token_ids=False))

    with pytest.raises(BackendResponseError, match="return_token_ids"):
        await (await session(servers, handler)).generate(CHAT, SamplingParams(max_tokens=4, n=2))


async def test_single_sample_without_token_ids_uses_usage(servers: Loopback) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=chat_response("a b", token_ids=False))

    generation = await (await session(servers, handler)).generate(
        CHAT, SamplingParams(max_tokens=4)
    )
    assert generation.completions[0].tokens == 2


async def test_stream_parses_chunks_and_counts_tokens(servers: Loopback) -> None:
    # As vLLM sends them with `return_token_ids`: the prompt's ids with the first chunk; a
    # chunk whose token has no text yet (a split character) is not passed on, but counted.
    chunks = [
        {
            "prompt_token_ids": [7, 8, 9, 10, 11],
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "token_ids": []}
            ],
        },
        {"choices": [{"index": 0, "delta": {"content": ""}, "token_ids": [9]}]},
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
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}},
    ]
    payload = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        sent = body(request)
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
        return httpx.Response(200, text=payload, headers={"content-type": "text/event-stream"})

    events = [
        e
        async for e in (await session(servers, handler)).stream(CHAT, SamplingParams(max_tokens=3))
    ]
    assert events == [
        StreamDelta(0, "Hel", tokens=2, prompt_tokens=5),
        StreamDelta(0, "lo", tokens=1),
        StreamEnd(finish_reasons=("length",), prompt_tokens=5, completion_tokens=(3,)),
    ]


async def test_error_inside_stream_is_raised(servers: Loopback) -> None:
    payload = 'data: {"error": {"message": "engine died", "code": 500}}\n\n'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=payload)

    with pytest.raises(BackendResponseError, match="engine died"):
        async for _ in (await session(servers, handler)).stream(CHAT, SamplingParams(max_tokens=2)):
            pass


async def test_a_refusal_keeps_the_field_vllm_blames(servers: Loopback) -> None:
    refusal = {"message": "too many tokens", "type": "BadRequestError", "param": "max_tokens"}
    streamed = f"data: {json.dumps({'error': refusal | {'code': 400}})}\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        if body(request).get("stream"):
            return httpx.Response(200, text=streamed)
        return httpx.Response(400, json={"error": refusal | {"code": 400}})

    with pytest.raises(BackendResponseError) as whole:
        await (await session(servers, handler)).generate(CHAT, SamplingParams(max_tokens=2))
    with pytest.raises(BackendResponseError) as mid_stream:
        async for _ in (await session(servers, handler)).stream(CHAT, SamplingParams(max_tokens=2)):
            pass
    for error in (whole.value, mid_stream.value):
        assert (error.status_code, error.param) == (400, "max_tokens")


async def test_score_reads_echoed_continuation_tokens(servers: Loopback) -> None:
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

    scored = await (await session(servers, handler)).prompt_logprobs(CHAT, "Paris.")
    assert calls == ["/tokenize", "/detokenize", "/v1/completions"]
    assert [t.token for t in scored.logprobs] == ["Paris", "."]
    assert scored.total_logprob == -0.75
    assert scored.prompt_tokens == 3


async def test_count_tokens(servers: Loopback) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert body(request) == {
            "model": MODEL,
            "prompt": "hello there",
            "add_special_tokens": False,
        }
        return httpx.Response(200, json={"count": 2, "max_model_len": 2048, "tokens": [5, 6]})

    assert await (await session(servers, handler)).count_tokens("hello there") == 2


async def test_sessions_pin_one_replica_and_share_idle_ones(servers: Loopback) -> None:
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return httpx.Response(200, json=chat_response("x"))

    shared = await backend(servers, handler, "a:1", "b:1")
    for _ in range(2):
        session = shared.session()
        for _ in range(3):
            await session.generate(CHAT, SamplingParams(max_tokens=1))
    assert hosts == ["a", "a", "a", "b", "b", "b"]


async def test_new_sessions_go_to_the_replica_with_the_fewest_calls_in_flight(
    servers: Loopback,
) -> None:
    release = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json=chat_response("x"))

    shared = await backend(servers, handler, "a:1", "b:1", "c:1")
    sessions = [shared.session() for _ in range(3)]
    # Uneven load: two calls on a's session, one on b's, none on c's.
    calls = [
        asyncio.create_task(s.generate(CHAT, SamplingParams(max_tokens=1)))
        for s in (sessions[0], sessions[0], sessions[1])
    ]
    await asyncio.sleep(0.05)
    chosen = [servers.name(shared.session().replica) for _ in range(2)]
    release.set()
    await asyncio.gather(*calls)
    assert [servers.name(s.replica) for s in sessions] == ["a:1", "b:1", "c:1"]
    assert chosen == ["c:1", "c:1"]


async def test_model_is_discovered_when_not_configured(servers: Loopback) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models"
        return httpx.Response(200, json={"object": "list", "data": [{"id": "served-model"}]})

    discovered = await backend(servers, handler, "a:1", model=None)
    assert await discovered.model_name() == "served-model"
    await discovered.check_ready()


@pytest.mark.parametrize(
    ("raise_or_respond", "error", "status"),
    [
        (httpx.ConnectError("reset"), BackendUnavailable, None),
        (httpx.ReadTimeout("slow"), BackendTimeout, None),
        (httpx.Response(503, json={"error": {"message": "overloaded"}}), BackendUnavailable, None),
        (httpx.Response(429, json={"error": {"message": "slow down"}}), BackendResponseError, 429),
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
    servers: Loopback,
    raise_or_respond: Exception | httpx.Response,
    error: type[Exception],
    status: int | None,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(raise_or_respond, Exception):
            raise raise_or_respond
        return raise_or_respond

    shared = await backend(servers, handler, timeout_s=0.2, retries=1)
    with pytest.raises(error) as info:
        await shared.session().generate(CHAT, SamplingParams(max_tokens=1))
    if status is not None:
        assert getattr(info.value, "status_code", None) == status


async def test_ready_while_any_replica_serves_the_model(servers: Loopback) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        model = MODEL if request.url.host == "a" else "other"
        return httpx.Response(200, json={"data": [{"id": model}]})

    await (await backend(servers, handler, "a:1", "b:1", "c:1", down=["c:1"])).check_ready()
    with pytest.raises(BackendUnavailable, match="other"):
        await (await backend(servers, handler, "b:1", "c:1", down=["c:1"])).check_ready()


async def test_ready_does_not_hang_on_a_hung_replica(
    servers: Loopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backends import vllm

    monkeypatch.setattr(vllm, "_PROBE_TIMEOUT_S", 0.05)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "hung":
            await asyncio.sleep(30)
        return httpx.Response(200, json={"data": [{"id": MODEL}]})

    shared = await backend(servers, handler, "hung:1", "a:1")
    await asyncio.wait_for(shared.check_ready(), 5)


async def test_flat_error_chunk_is_raised(servers: Loopback) -> None:
    payload = 'data: {"object": "error", "message": "overloaded", "code": 503}\n\n'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=payload)

    with pytest.raises(BackendResponseError, match="overloaded"):
        async for _ in (await session(servers, handler)).stream(CHAT, SamplingParams(max_tokens=2)):
            pass


async def test_reasoning_parser_output_is_kept(servers: Loopback) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        response = chat_response("4")
        response["choices"][0]["message"]["reasoning"] = "2 and 2 make 4"
        return httpx.Response(200, json=response)

    generation = await (await session(servers, handler)).generate(
        CHAT, SamplingParams(max_tokens=8)
    )
    assert generation.completions[0].reasoning == "2 and 2 make 4"


async def test_error_messages_name_no_internal_address(servers: Loopback) -> None:
    shared = await backend(servers, answer_x, "a:1", down=["a:1"], retries=0)
    with pytest.raises(BackendUnavailable) as info:
        await shared.session().generate(CHAT, SamplingParams(max_tokens=1))
    assert "127.0.0.1" not in str(info.value)


def answer_x(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=chat_response("x"))


def recording(respond: Handler = answer_x) -> tuple[Handler, list[str]]:
    """A handler that records the host of every request it answers."""
    hosts: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        answer = respond(request)
        return await answer if inspect.isawaitable(answer) else answer

    return handler, hosts


async def test_a_refused_connection_moves_the_session_to_another_replica(
    servers: Loopback,
) -> None:
    handler, hosts = recording()
    shared = await backend(servers, handler, "a:1", "b:1", down=["a:1"])
    session = shared.session()
    for _ in range(3):
        await session.generate(CHAT, SamplingParams(max_tokens=1))
    # Later sessions skip the replica that refused, while it is marked down.
    assert servers.name(shared.session().replica) == "b:1"
    assert hosts == ["b", "b", "b"]
    assert servers.retried == ["connect"]


async def test_a_down_replica_gets_its_turn_again_later(
    servers: Loopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backends import vllm_replicas

    monkeypatch.setattr(vllm_replicas, "_DOWN_S", 0.0)
    shared = await backend(servers, answer_x, "a:1", "b:1", down=["a:1"])
    await shared.session().generate(CHAT, SamplingParams(max_tokens=1))
    assert servers.retried == ["connect"]
    assert "a:1" in [servers.name(shared.session().replica) for _ in range(2)]


async def test_a_stream_fails_over_before_it_starts(servers: Loopback) -> None:
    payload = 'data: {"choices": [{"index": 0, "delta": {"content": "hi"}, "token_ids": [1], '
    payload += '"finish_reason": "stop"}]}\n\n'
    payload += 'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}\n\n'
    payload += "data: [DONE]\n\n"
    handler, hosts = recording(lambda _: httpx.Response(200, text=payload))
    session = (await backend(servers, handler, "a:1", "b:1", down=["a:1"])).session()
    events = [e async for e in session.stream(CHAT, SamplingParams(max_tokens=2))]
    assert events[0] == StreamDelta(0, "hi", tokens=1)
    assert hosts == ["b"]


async def test_every_replica_refusing_is_unavailable_after_the_retries(servers: Loopback) -> None:
    names = ("a:1", "b:1", "c:1")
    shared = await backend(servers, answer_x, *names, down=names, retries=4)
    with pytest.raises(BackendUnavailable, match="unreachable"):
        await shared.session().generate(CHAT, SamplingParams(max_tokens=1))
    # One try each, then the last one again after a backoff: it may be restarting.
    assert servers.retried == ["connect"] * 4


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("closed mid-response")],
)
async def test_a_call_that_may_have_run_is_not_sent_again(
    servers: Loopback, failure: Exception
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise failure

    handler, hosts = recording(fail)
    session = (await backend(servers, handler, "a:1", "b:1", timeout_s=0.2)).session()
    with pytest.raises((BackendTimeout, BackendUnavailable)):
        await session.generate(CHAT, SamplingParams(max_tokens=1))
    # Sampling again elsewhere would double the work and the bill.
    assert hosts == ["a"]
    assert servers.retried == []


async def test_ready_probe_marks_a_refusing_replica_down(servers: Loopback) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [{"id": MODEL}]})

    shared = await backend(servers, handler, "a:1", "b:1", down=["a:1"])
    await shared.check_ready()
    assert [servers.name(shared.session().replica) for _ in range(2)] == ["b:1", "b:1"]


async def test_model_is_discovered_from_any_live_replica(servers: Loopback) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"object": "list", "data": [{"id": "served-model"}]})

    discovered = await backend(servers, handler, "a:1", "b:1", down=["a:1"], model=None)
    assert await discovered.model_name() == "served-model"


def failing(*statuses: int, retry_after: str | None = None) -> Handler:
    """Answers each status in turn (a reset for 0), then succeeds."""
    left = list(statuses)

    def handler(request: httpx.Request) -> httpx.Response:
        if not left:
            return answer_x(request)
        status = left.pop(0)
        if status == 0:
            raise httpx.ConnectError("reset")
        headers = {"Retry-After": retry_after} if retry_after else {}
        body = {"error": {"message": "busy", "type": "ServiceUnavailable", "code": status}}
        return httpx.Response(status, json=body, headers=headers)

    return handler


async def test_a_call_vllm_turned_away_is_sent_again(servers: Loopback) -> None:
    handler, hosts = recording(failing(503, 429, 0))
    shared = await backend(servers, handler, "a:1")
    generation = await shared.session().generate(CHAT, SamplingParams(max_tokens=1))
    assert generation.completions[0].text == "x"
    assert hosts == ["a", "a", "a", "a"]
    assert servers.retried == ["503", "429", "reset"]


async def test_retries_are_bounded(servers: Loopback) -> None:
    shared = await backend(servers, failing(503, 503, 503), "a:1", retries=2)
    with pytest.raises(BackendUnavailable, match="busy"):
        await shared.session().generate(CHAT, SamplingParams(max_tokens=1))
    assert servers.retried == ["503", "503"]


async def test_a_503_moves_the_session_to_another_replica_at_once(servers: Loopback) -> None:
    busy = failing(503, 503, 503)

    def handler(request: httpx.Request) -> httpx.Response | Awaitable[httpx.Response]:
        return busy(request) if request.url.host == "a" else answer_x(request)

    recorded, hosts = recording(handler)
    # A backoff this long would show: moving to another replica does not wait.
    shared = await backend(servers, recorded, "a:1", "b:1", retry_backoff_s=30)
    session = shared.session()
    await asyncio.wait_for(session.generate(CHAT, SamplingParams(max_tokens=1)), 5)
    await session.generate(CHAT, SamplingParams(max_tokens=1))
    assert hosts == ["a", "b", "b"]
    assert servers.retried == ["503"]


async def test_retry_after_is_honoured_but_never_past_the_deadline(servers: Loopback) -> None:
    shared = await backend(servers, failing(503, retry_after="0.2"), "a:1")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await shared.session().generate(CHAT, SamplingParams(max_tokens=1))
    assert loop.time() - started >= 0.2

    shared = await backend(servers, failing(503, retry_after="60"), "a:1")
    session = shared.session("req-1", deadline=loop.time() + 5)
    with pytest.raises(BackendUnavailable, match="busy"):
        await asyncio.wait_for(session.generate(CHAT, SamplingParams(max_tokens=1)), 2)
    assert servers.retried == ["503"]


async def test_routing_and_affinity_headers_reach_every_call(servers: Loopback) -> None:
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(
            200, json=chat_response("x"), headers={"x-session-token": f"pod-{len(seen)}"}
        )

    shared = await backend(
        servers,
        handler,
        routing_header="X-SMG-Routing-Key",
        affinity_header="x-session-token",
    )
    with routing_key_set("key-of-the-request"):
        session = shared.session("chatcmpl-7")
    for _ in range(3):
        await session.generate(CHAT, SamplingParams(max_tokens=1))
    assert [h["x-smg-routing-key"] for h in seen] == ["key-of-the-request"] * 3
    assert [h["x-request-id"] for h in seen] == ["chatcmpl-7-0", "chatcmpl-7-1", "chatcmpl-7-2"]
    # The first call has no token yet; each later one echoes the last the router set.
    assert [h.get("x-session-token") for h in seen] == [None, "pod-1", "pod-2"]


def echo_response() -> dict[str, Any]:
    """vLLM's answer to an echo request for the prompt "Paris is" that generated " big"."""
    tokens, values = ["Paris", " is", " big"], [None, -2.5, -1.25]
    tops: list[dict[str, float] | None] = [None, {" is": -2.5}, {" big": -1.25}]
    offsets = [0, 5, 8]
    return {
        "choices": [
            {
                "index": 0,
                "text": "Paris is big",
                "logprobs": {
                    "tokens": tokens,
                    "token_logprobs": values,
                    "top_logprobs": tops,
                    "text_offset": offsets,
                },
                "finish_reason": "length",
                "token_ids": [7],
            }
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }


@pytest.mark.parametrize("max_tokens", [0, 1])
async def test_echo_splits_the_scored_prompt_from_what_was_generated(
    servers: Loopback, max_tokens: int
) -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(body(request))
        return httpx.Response(200, json=echo_response())

    params = SamplingParams(max_tokens=max_tokens, temperature=0, logprobs=1)
    echo = await (await session(servers, handler)).echo(TokenPrompt((11, 12)), params)
    (sent,) = seen
    # vLLM generates at least one token; for max_tokens 0 the gateway drops it.
    assert sent["prompt"] == [11, 12] and sent["echo"] is True and sent["max_tokens"] == 1
    assert echo.text == "Paris is"
    assert [(t.token, t.logprob, t.offset) for t in echo.tokens] == [
        ("Paris", None, 0),
        (" is", -2.5, 5),
    ]
    (completion,) = echo.generation.completions
    if max_tokens:
        assert (completion.text, completion.tokens) == (" big", 1)
        assert completion.logprobs == (TokenLogprob(" big", -1.25, ((" big", -1.25),)),)
    else:
        assert (completion.text, completion.tokens, completion.logprobs) == ("", 0, ())


async def test_the_sessions_of_one_request_share_its_routing_key(servers: Loopback) -> None:
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json=chat_response("x"))

    shared = await backend(servers, handler, routing_header="X-Session-ID")
    # The strategy's session and a judge's (which has no request id) within one request.
    with routing_key_set("one-request"):
        sessions = [shared.session("chatcmpl-7"), shared.session()]
    for each in sessions:
        await each.generate(CHAT, SamplingParams(max_tokens=1))
    assert [h["x-session-id"] for h in seen] == ["one-request"] * 2
    assert [h.get("x-request-id") for h in seen] == ["chatcmpl-7-0", None]


async def test_a_session_outside_a_request_makes_a_key_of_its_own(servers: Loopback) -> None:
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json=chat_response("x"))

    shared = await backend(servers, handler, routing_header="X-Session-ID")
    first, second = shared.session("chatcmpl-7"), shared.session("chatcmpl-7")
    for each in (first, first, second):
        await each.generate(CHAT, SamplingParams(max_tokens=1))
    keys = [h["x-session-id"] for h in seen]
    # Never the request id: the same on one session's calls, another on the next session.
    assert keys[0] == keys[1] != keys[2]
    assert all(re.fullmatch(r"[0-9a-f]{32}", key) for key in keys)


async def test_no_routing_header_is_sent_unless_asked(servers: Loopback) -> None:
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json=chat_response("x"))

    shared = await backend(servers, handler)
    await shared.session().generate(CHAT, SamplingParams(max_tokens=1))
    assert not {"x-request-id", "x-session-id", "x-smg-routing-key"} & set(seen[0])


@pytest.mark.parametrize("header", ["X-Request-Id", "x-request-id"])
def test_the_call_id_header_cannot_be_the_routing_header(header: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="each call's own id"):
        VLLMClientSettings(routing_header=header)
