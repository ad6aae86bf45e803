"""`POST /v1/responses` against the scripted backend: the request mapping, the `response` object
and its stream events checked against the openai SDK's own types, and every refusal."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from backends.base import ChatMessage, ChatPrompt, Generation, Prompt, SamplingParams
from backends.errors import BackendResponseError
from backends.scripted import ScriptedBackend
from strategies.limits import Limits
from tests.factories import SCRIPTED_MODEL, app_client

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def responses_body(input: Any = "What is 2 + 2?", /, **fields: Any) -> dict[str, Any]:
    """A `/v1/responses` body for the scripted model."""
    return {"model": SCRIPTED_MODEL, "input": input, **fields}


def named_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """The (`event:` name, JSON data) pairs of a stream; every event must be named."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def post(backend: ScriptedBackend, body: dict[str, Any], limits: Limits | None = None) -> Any:
    async with app_client(backend, limits) as client:
        return await client.post("/v1/responses", json=body)


async def test_plain_response_is_an_sdk_response_with_exact_usage() -> None:
    response = await post(ScriptedBackend(["The answer is 4."]), responses_body())
    assert response.status_code == 200
    body = response.json()
    parsed = Response.model_validate(body)
    assert parsed.id.startswith("resp_")
    assert parsed.model == SCRIPTED_MODEL
    assert parsed.status == "completed"
    assert parsed.output_text == "The answer is 4."
    assert [item.type for item in parsed.output] == ["message"]
    assert body["store"] is False
    assert body["usage"] == {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 11,
        "verifier_tokens": 0,
    }
    assert "reasoning_trace" not in body


async def test_request_fields_reach_the_backend_and_are_echoed() -> None:
    backend = ScriptedBackend(["4"])
    body = responses_body(
        instructions="Answer briefly.",
        max_output_tokens=7,
        temperature=0.3,
        top_p=0.9,
        seed=5,
        metadata={"k": "v"},
        store=False,
    )
    response = await post(backend, body)
    assert response.status_code == 200
    (call,) = backend.calls
    assert call.prompt == ChatPrompt(
        (ChatMessage("system", "Answer briefly."), ChatMessage("user", "What is 2 + 2?"))
    )
    assert call.params is not None
    sampling = (call.params.max_tokens, call.params.temperature, call.params.top_p)
    assert sampling == (7, 0.3, 0.9)
    assert call.params.seed == 5
    echoed = response.json()
    assert echoed["instructions"] == "Answer briefly."
    assert (echoed["max_output_tokens"], echoed["temperature"], echoed["top_p"]) == (7, 0.3, 0.9)
    assert echoed["metadata"] == {"k": "v"}


async def test_vllms_sampling_fields_and_logit_bias_reach_the_backend() -> None:
    # vLLM 0.32's ResponsesRequest takes logit_bias (OpenAI's Responses API has none) and its
    # sampling extensions, and applies them; so does this endpoint, checked as on chat.
    backend = ScriptedBackend(["4"])
    body = responses_body(
        logit_bias={"42": 5, "7": -100},
        top_k=5,
        min_p=0.1,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        repetition_penalty=1.2,
        stop_token_ids=[2],
    )
    assert (await post(backend, body)).status_code == 200
    params = backend.calls[0].params
    assert params is not None
    assert params.logit_bias == ((42, 5.0), (7, -100.0))
    assert (params.top_k, params.min_p, params.repetition_penalty) == (5, 0.1, 1.2)
    assert (params.presence_penalty, params.frequency_penalty) == (0.5, -0.5)
    assert params.stop_token_ids == (2,)
    refused = await post(backend, responses_body(logit_bias={"banana": 1}))
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "logit_bias"


async def test_input_items_become_the_conversation() -> None:
    backend = ScriptedBackend(["ok"])
    items = [
        {"role": "developer", "content": "Be terse."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "2+2?"}]},
        {
            "type": "reasoning",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "2 and 2."}],
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "4", "annotations": []}],
        },
        {"role": "user", "content": "And 3+3?"},
    ]
    response = await post(backend, responses_body(items))
    assert response.status_code == 200
    assert backend.calls[0].prompt == ChatPrompt(
        (
            ChatMessage("system", "Be terse."),
            ChatMessage("user", "2+2?"),
            ChatMessage("assistant", "4", reasoning="2 and 2."),
            ChatMessage("user", "And 3+3?"),
        )
    )


async def test_a_partial_assistant_turn_is_continued() -> None:
    backend = ScriptedBackend(["more"])
    items = [
        {"role": "user", "content": "Count."},
        {"type": "message", "role": "assistant", "status": "incomplete", "content": "1, 2,"},
    ]
    await post(backend, responses_body(items))
    prompt = backend.calls[0].prompt
    assert isinstance(prompt, ChatPrompt) and prompt.continue_final_message


async def test_reasoning_effort_sets_the_token_budget() -> None:
    backend = ScriptedBackend(["4"])
    limits = Limits(max_tokens=4096, default_max_tokens=100)
    response = await post(backend, responses_body(reasoning={"effort": "low"}), limits)
    assert response.status_code == 200
    assert backend.calls[0].params is not None and backend.calls[0].params.max_tokens == 256
    assert response.json()["reasoning"] == {"effort": "low", "summary": None}


async def test_cot_reasoning_is_a_reasoning_item_whole_and_streamed() -> None:
    backend = ScriptedBackend(["Two and two make four. Answer: 4"])
    body = responses_body(reasoning_strategy="cot")
    whole = (await post(backend, body)).json()
    streamed = await post(backend, body | {"stream": True})

    parsed = Response.model_validate(whole)
    assert [item.type for item in parsed.output] == ["reasoning", "message"]
    reasoning = parsed.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text.strip() == "Two and two make four."
    assert parsed.output_text == "4"
    assert whole["usage"]["output_tokens_details"]["reasoning_tokens"] > 0

    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in streamed.text
    events = named_events(streamed.text)
    for name, data in events:
        assert name == data["type"]
        EVENTS.validate_python(data)  # each event is one the SDK knows, in its shape
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    kinds = [name for name, _ in events]
    reasoning_deltas = kinds.count("response.reasoning_text.delta")
    text_deltas = kinds.count("response.output_text.delta")
    assert reasoning_deltas >= 1 and text_deltas >= 1
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.reasoning_text.delta"] * reasoning_deltas,
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * text_deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = Response.model_validate(events[-1][1]["response"])
    assert final.status == "completed"
    assert final.output_text == "4"
    done_items = [data["item"] for name, data in events if name == "response.output_item.done"]
    assert [item.model_dump(exclude_none=True) for item in final.output] == done_items
    assert final.usage is not None and final.usage.output_tokens == whole["usage"]["output_tokens"]


async def test_an_answer_cut_by_max_output_tokens_is_incomplete() -> None:
    backend = ScriptedBackend(["one two three four five"])
    body = responses_body(max_output_tokens=2)
    whole = (await post(backend, body)).json()
    streamed = named_events((await post(backend, body | {"stream": True})).text)
    for response in (whole, streamed[-1][1]["response"]):
        assert response["status"] == "incomplete"
        assert response["incomplete_details"] == {"reason": "max_output_tokens"}
        assert response["output"][-1]["status"] == "incomplete"
    assert streamed[-1][0] == "response.completed"  # as vLLM ends it


async def test_majority_vote_answers_through_responses() -> None:
    backend = ScriptedBackend(["The answer is 5.", "It is 4.", "So 4."])
    body = responses_body(
        reasoning_strategy="majority_vote",
        reasoning_params={"n": 3, "return_trace": True},
    )
    whole = (await post(backend, body)).json()
    assert Response.model_validate(whole).output_text == "It is 4."
    assert whole["reasoning_trace"]["votes"] == {"5": 1.0, "4": 2.0}
    assert whole["usage"]["output_tokens"] == 9
    streamed = named_events((await post(backend, body | {"stream": True})).text)
    assert Response.model_validate(streamed[-1][1]["response"]).output_text == "It is 4."


class ThinkingBackend(ScriptedBackend):
    """Splits `<think>...</think>` off each completion as its reasoning, as a vLLM reasoning
    parser does."""

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        generation = await super().generate(prompt, params)
        completions = []
        for c in generation.completions:
            thought, _, answer = c.text.removeprefix("<think>").partition("</think>")
            completions.append(dataclasses.replace(c, text=answer, reasoning=thought))
        return dataclasses.replace(generation, completions=tuple(completions))


async def test_a_vote_shows_its_chosen_candidates_reasoning() -> None:
    backend = ThinkingBackend(
        ["<think>5 it is</think>5", "<think>3 plus 1</think>4", "<think>2 and 2</think>4"]
    )
    body = responses_body(reasoning_strategy="majority_vote", reasoning_params={"n": 3})
    whole = Response.model_validate((await post(backend, body)).json())
    streamed = named_events((await post(backend, body | {"stream": True})).text)
    final = Response.model_validate(streamed[-1][1]["response"])
    for response in (whole, final):
        assert [item.type for item in response.output] == ["reasoning", "message"]
        reasoning = response.output[0]
        assert reasoning.type == "reasoning" and reasoning.content is not None
        assert reasoning.content[0].text == "3 plus 1"
        assert response.output_text == "4"


async def test_error_mid_stream_is_an_error_event_with_param_then_failed() -> None:
    backend = ScriptedBackend()
    backend.error = BackendResponseError("too many tokens", status_code=400, param="max_tokens")
    response = await post(backend, responses_body(stream=True))
    assert response.status_code == 200
    events = named_events(response.text)
    assert [name for name, _ in events] == [
        "response.created",
        "response.in_progress",
        "error",
        "response.failed",
    ]
    error = events[2][1]
    EVENTS.validate_python(error)
    assert (error["code"], error["param"], error["message"]) == (
        "backend_rejected",
        "max_tokens",
        "too many tokens",
    )
    failed = events[3][1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "backend_rejected", "message": "too many tokens"}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"background": True, "store": False}, "store"),
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "tools.0.type"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"n": 2}, "n"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"truncation": "auto"}, "truncation"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"input": []}, "input"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input.0.role"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
    ],
)
async def test_what_this_server_cannot_do_is_400_naming_the_field(
    fields: dict[str, Any], param: str
) -> None:
    backend = ScriptedBackend()
    response = await post(backend, responses_body() | fields)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert backend.calls == []


async def test_store_false_or_absent_keeps_nothing_and_store_true_keeps_it() -> None:
    backend = ScriptedBackend(["4"])
    async with app_client(backend) as client:
        for body in (responses_body(store=False), responses_body()):
            answered = await client.post("/v1/responses", json=body)
            assert answered.status_code == 200
            kept = await client.get(f"/v1/responses/{answered.json()['id']}")
            assert kept.status_code == 404
            assert kept.json()["error"]["code"] == "response_not_found"
        answered = await client.post("/v1/responses", json=responses_body(store=True))
        kept = await client.get(f"/v1/responses/{answered.json()['id']}")
        assert kept.status_code == 200
        assert kept.json() == answered.json()


async def test_an_image_part_is_400_this_model_takes_text_only() -> None:
    items = [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
            ],
        }
    ]
    response = await post(ScriptedBackend(), responses_body(items))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input.0.content.1"
    assert "text only" in error["message"]
