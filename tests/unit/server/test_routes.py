"""The HTTP surface against the scripted backend: shapes, streaming, and every error path."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from backends.base import ChatPrompt
from backends.errors import BackendError, BackendResponseError, BackendTimeout, BackendUnavailable
from backends.scripted import ScriptedBackend
from server.settings import Settings
from strategies.limits import Limits
from tests.factories import SCRIPTED_MODEL, app_client, chat_body, sse_events


async def test_chat_completion_shape_and_exact_usage() -> None:
    backend = ScriptedBackend(["The answer is 4."])
    async with app_client(backend) as client:
        response = await client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == SCRIPTED_MODEL
    assert body["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "The answer is 4.",
                "reasoning": None,
                "reasoning_content": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    # Scripted tokens are whitespace-led words; the chat prompt counts content words + 2 per turn.
    assert body["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 4,
        "total_tokens": 11,
        "completion_tokens_details": {"reasoning_tokens": 0},
        "verifier_tokens": 0,
    }
    assert "reasoning_trace" not in body
    assert "reasoning_fallback" not in body
    assert response.headers["x-request-id"]


async def test_request_fields_reach_the_backend() -> None:
    backend = ScriptedBackend(["a b c"])
    body = chat_body(
        n=3,
        max_completion_tokens=7,
        temperature=0.3,
        top_p=0.9,
        stop=["x"],
        seed=11,
        logprobs=True,
        top_logprobs=2,
    )
    async with app_client(backend) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    params = backend.calls[0].params
    assert params is not None
    assert (params.n, params.max_tokens, params.temperature, params.top_p) == (3, 7, 0.3, 0.9)
    assert (params.stop, params.seed, params.logprobs) == (("x",), 11, 2)
    choices = response.json()["choices"]
    assert len(choices) == 3
    assert [t["token"] for t in choices[0]["logprobs"]["content"]] == ["a", " b", " c"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, 50),
        ({"reasoning_effort": "low"}, 256),
        ({"reasoning_effort": "high"}, 1000),
        ({"reasoning_effort": "high", "max_tokens": 9}, 9),
    ],
)
async def test_reasoning_effort_sets_the_budget_a_request_leaves_open(
    fields: dict[str, object], expected: int
) -> None:
    backend = ScriptedBackend()
    limits = Limits(max_tokens=1000, default_max_tokens=50)
    async with app_client(backend, limits) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(**fields))
    assert response.status_code == 200
    assert backend.sampled[0].max_tokens == expected


async def test_assistant_last_turn_is_continued() -> None:
    backend = ScriptedBackend(["more"])
    body = chat_body()
    body["messages"].append({"role": "assistant", "content": "The answer"})
    async with app_client(backend) as client:
        await client.post("/v1/chat/completions", json=body)
    prompt = backend.calls[0].prompt
    assert isinstance(prompt, ChatPrompt) and prompt.continue_final_message


async def test_completions_endpoint() -> None:
    backend = ScriptedBackend(["four"])
    async with app_client(backend) as client:
        response = await client.post(
            "/v1/completions",
            json={"model": SCRIPTED_MODEL, "prompt": "2 + 2 =", "logprobs": 1},
        )
    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "four"
    assert body["choices"][0]["logprobs"]["tokens"] == ["four"]
    assert body["usage"]["prompt_tokens"] == 4
    assert backend.sampled[0].max_tokens == 16


async def test_chat_stream_chunks_usage_and_done() -> None:
    backend = ScriptedBackend(["one two three"])
    body = chat_body(stream=True, stream_options={"include_usage": True})
    async with app_client(backend) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "one two three"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3


async def test_stream_without_usage_has_no_usage_chunk() -> None:
    async with app_client(ScriptedBackend(["x y"])) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(stream=True))
    chunks = sse_events(response.text)[:-1]
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_completions_stream() -> None:
    backend = ScriptedBackend(["a b"])
    body = {"model": SCRIPTED_MODEL, "prompt": "p", "stream": True, "logprobs": 0}
    async with app_client(backend) as client:
        response = await client.post("/v1/completions", json=body)
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    texts = [c["choices"][0]["text"] for c in events[:-1] if c["choices"]]
    assert "".join(texts) == "a b"
    offsets = [c["choices"][0]["logprobs"]["text_offset"] for c in events[:-2]]
    assert offsets == [[0], [1]]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"n": 0}, "n"),
        ({"max_tokens": "many"}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"stream_options": {"include_usage": True}}, None),
        ({"stop": [""]}, "stop"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ],
)
async def test_bad_fields_are_400_naming_the_field(
    fields: dict[str, object], param: str | None
) -> None:
    async with app_client(ScriptedBackend()) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(**fields))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize(
    "fields",
    [
        {"functions": [{"name": "f"}]},
    ],
)
async def test_fields_we_cannot_honour_are_400(fields: dict[str, object]) -> None:
    async with app_client(ScriptedBackend()) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(**fields))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == next(iter(fields))


async def test_unused_and_unknown_fields_are_accepted() -> None:
    fields = {
        "tool_choice": "none",
        "presence_penalty": 0,
        "response_format": {"type": "text"},
        "foo": 1,
    }
    async with app_client(ScriptedBackend()) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(**fields))
    assert response.status_code == 200


async def test_unknown_strategy_lists_valid_names() -> None:
    async with app_client(ScriptedBackend()) as client:
        response = await client.post(
            "/v1/chat/completions", json=chat_body(reasoning_strategy="tree_of_magic")
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "reasoning_strategy"
    assert error["code"] == "unknown_strategy"
    assert "cot" in error["message"] and "none" in error["message"]


async def test_bad_strategy_params_name_the_field() -> None:
    body = chat_body(reasoning_strategy="cot", reasoning_params={"answer_marker": ""})
    async with app_client(ScriptedBackend()) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "reasoning_params.answer_marker"


async def test_params_for_a_strategy_without_params_are_rejected() -> None:
    body = chat_body(reasoning_params={"n": 4})
    async with app_client(ScriptedBackend()) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "reasoning_params.n"


@pytest.mark.parametrize(
    ("fields", "param"), [({"n": 5}, "n"), ({"max_tokens": 101}, "max_tokens")]
)
async def test_limits_are_enforced(fields: dict[str, int], param: str) -> None:
    limits = Limits(max_n=4, max_tokens=100, default_max_tokens=50)
    async with app_client(ScriptedBackend(), limits) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(**fields))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


async def test_unknown_model_is_404() -> None:
    async with app_client(ScriptedBackend()) as client:
        response = await client.post("/v1/chat/completions", json=chat_body() | {"model": "gpt-9"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


async def test_invalid_json_is_400() -> None:
    async with app_client(ScriptedBackend()) as client:
        response = await client.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_unsupported_completion_fields_are_400() -> None:
    async with app_client(ScriptedBackend()) as client:
        body = {"model": SCRIPTED_MODEL, "prompt": "p", "suffix": "after"}
        response = await client.post("/v1/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "suffix"


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (BackendUnavailable("down"), 503, "backend_unavailable"),
        (BackendTimeout("slow"), 504, "backend_timeout"),
        (BackendResponseError("broken", status_code=500), 502, "backend_error"),
        (BackendResponseError("prompt too long", status_code=400), 400, "backend_rejected"),
    ],
)
async def test_backend_errors_map_to_status(error: BackendError, status: int, code: str) -> None:
    backend = ScriptedBackend()
    async with app_client(backend) as client:
        backend.error = error
        response = await client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_request_deadline_is_504() -> None:
    limits = Limits(request_timeout_s=0.05)
    async with app_client(ScriptedBackend(delay_s=5), limits) as client:
        response = await client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "request_timeout"


async def test_error_mid_stream_is_one_error_chunk_then_done() -> None:
    backend = ScriptedBackend()
    async with app_client(backend) as client:
        backend.error = BackendUnavailable("vLLM went away")
        response = await client.post("/v1/chat/completions", json=chat_body(stream=True))
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert error["code"] == "backend_unavailable"
    assert "vLLM went away" in error["message"]
    # The whole error object, as a non-streamed error body has it.
    assert error["param"] is None and error["type"] == "service_unavailable_error"


async def test_error_mid_stream_names_the_field_to_blame() -> None:
    backend = ScriptedBackend()
    async with app_client(backend) as client:
        backend.error = BackendResponseError("too many tokens", status_code=400, param="max_tokens")
        response = await client.post("/v1/chat/completions", json=chat_body(stream=True))
    assert response.status_code == 200
    error = sse_events(response.text)[-2]["error"]
    assert error == {
        "message": "too many tokens",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "backend_rejected",
    }


async def test_unknown_route_uses_error_envelope() -> None:
    async with app_client(ScriptedBackend()) as client:
        response = await client.get("/v1/nothing")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_models_health_ready() -> None:
    backend = ScriptedBackend()
    async with app_client(backend) as client:
        models = (await client.get("/v1/models")).json()
        assert [m["id"] for m in models["data"]] == [SCRIPTED_MODEL]
        assert (await client.get("/health")).json() == {"status": "ok"}
        assert (await client.get("/ready")).status_code == 200
        backend.error = BackendUnavailable("not loaded")
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert (await client.get("/health")).status_code == 200


async def test_reasoning_is_mirrored_as_reasoning_content() -> None:
    backend = ScriptedBackend(["Two and two make four. Answer: 4"])
    body = chat_body(reasoning_strategy="cot")
    async with app_client(backend) as client:
        whole = (await client.post("/v1/chat/completions", json=body)).json()
        streamed = await client.post("/v1/chat/completions", json=body | {"stream": True})
    message = whole["choices"][0]["message"]
    assert message["content"] == "4"
    assert message["reasoning"].strip() == "Two and two make four."
    assert message["reasoning_content"] == message["reasoning"]
    deltas = [e["choices"][0]["delta"] for e in sse_events(streamed.text)[:-1] if e["choices"]]
    reasoning = [d for d in deltas if "reasoning" in d]
    assert reasoning, deltas
    assert all(d["reasoning_content"] == d["reasoning"] for d in reasoning)
    assert "".join(d["reasoning"] for d in reasoning).strip() == "Two and two make four."


@pytest.mark.parametrize("name", ["reasoning", "reasoning_content"])
async def test_assistant_reasoning_in_the_history_reaches_the_backend(name: str) -> None:
    backend = ScriptedBackend(["ok"])
    messages = [
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4", name: "Two and two."},
        {"role": "user", "content": "And 3 + 3?"},
    ]
    async with app_client(backend) as client:
        response = await client.post(
            "/v1/chat/completions", json=chat_body() | {"messages": messages}
        )
    assert response.status_code == 200
    prompt = backend.calls[0].prompt
    assert isinstance(prompt, ChatPrompt)
    assert [m.reasoning for m in prompt.messages] == [None, "Two and two.", None]
    assert prompt.messages[1].as_dict()["reasoning"] == "Two and two."


async def test_reasoning_on_a_user_message_is_400() -> None:
    messages = [{"role": "user", "content": "hi", "reasoning_content": "hm"}]
    async with app_client(ScriptedBackend()) as client:
        response = await client.post(
            "/v1/chat/completions", json=chat_body() | {"messages": messages}
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages.0.reasoning_content"


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ],
)
async def test_a_non_text_part_is_400_naming_it(part: dict[str, object]) -> None:
    content = [{"type": "text", "text": "What is this?"}, part]
    body = chat_body() | {"messages": [{"role": "user", "content": content}]}
    backend = ScriptedBackend()
    async with app_client(backend) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages.0.content.1"
    assert "text only" in error["message"] and repr(part["type"]) in error["message"]
    assert backend.calls == []


async def test_text_parts_are_joined() -> None:
    content = [{"type": "text", "text": "What is"}, {"type": "text", "text": " 2 + 2?"}]
    backend = ScriptedBackend(["4"])
    async with app_client(backend) as client:
        body = chat_body() | {"messages": [{"role": "user", "content": content}]}
        response = await client.post("/v1/chat/completions", json=body)
        missing = await client.post(
            "/v1/chat/completions",
            json=chat_body() | {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
        )
    assert response.status_code == 200
    prompt = backend.calls[0].prompt
    assert isinstance(prompt, ChatPrompt)
    assert prompt.messages[0].content == "What is 2 + 2?"
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "messages.0.content.0"


async def test_model_is_retrieved_by_id_and_an_unknown_one_is_404() -> None:
    async with app_client(ScriptedBackend(model="org/model-1")) as client:
        found = await client.get("/v1/models/org/model-1")
        missing = await client.get("/v1/models/gpt-9")
    assert found.status_code == 200
    assert found.json()["id"] == "org/model-1"
    assert found.json()["object"] == "model"
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["type"] == "not_found_error"
    assert error["param"] == "model"
    assert "'gpt-9'" in error["message"] and "'org/model-1'" in error["message"]


async def test_metrics_count_requests_by_strategy_and_status() -> None:
    async with app_client(ScriptedBackend(["x"])) as client:
        await client.post("/v1/chat/completions", json=chat_body())
        await client.post("/v1/chat/completions", json=chat_body(reasoning_strategy="cot"))
        await client.post("/v1/chat/completions", json=chat_body(reasoning_strategy="nope"))
        text = (await client.get("/metrics")).text
    labels = 'model="scripted-model",status="ok",strategy="none"'
    assert f"ttc_requests_total{{{labels}}} 1.0" in text
    assert 'ttc_requests_total{model="scripted-model",status="ok",strategy="cot"} 1.0' in text
    assert 'status="client_error",strategy="invalid"} 1.0' in text
    assert 'ttc_request_duration_seconds_count{model="scripted-model",strategy="none"} 1.0' in text


async def test_client_supplied_request_id_is_echoed() -> None:
    async with app_client(ScriptedBackend()) as client:
        response = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={"X-Request-Id": "abc-123"}
        )
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["id"] == "chatcmpl-abc-123"


async def test_concurrent_requests_all_answered() -> None:
    backend = ScriptedBackend(["ok"], delay_s=0.01)
    async with app_client(backend) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=chat_body()) for _ in range(50))
        )
    assert [r.status_code for r in responses] == [200] * 50
    assert len(backend.calls) == 50


async def test_ready_names_a_down_replica_by_place_and_its_url_only_to_the_operator() -> None:
    # /ready is open: it named the replicas' URLs to anyone who asked.
    backend = ScriptedBackend()
    down = "no vLLM replica is ready: http://10.0.0.7:8000: refused; http://10.0.0.8:8000: refused"
    backend.error = BackendUnavailable(down)
    settings = Settings(metrics_token=SecretStr("ops-token"))
    async with app_client(backend, settings=settings) as client:
        anyone = (await client.get("/ready")).json()["error"]["message"]
        operator = await client.get("/ready", headers={"Authorization": "Bearer ops-token"})
    assert "10.0.0" not in anyone
    assert anyone == "no vLLM replica is ready: replica 1: refused; replica 2: refused"
    assert operator.json()["error"]["message"] == down
