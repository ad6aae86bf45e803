"""Plain-model completions (echo, scoring, token ids, batches) and the tokenizer routes, through
the app around the scripted backend, whose tokens are whitespace-led words."""

from __future__ import annotations

from typing import Any

import pytest

from backends.base import TextPrompt
from backends.scripted import ScriptedBackend
from tests.factories import SCRIPTED_MODEL, app_client


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": SCRIPTED_MODEL, "temperature": 0, **fields}


async def test_echo_scores_the_prompt_then_the_generated_token() -> None:
    backend = ScriptedBackend(["four"], logprob=-0.25)
    async with app_client(backend) as client:
        response = await client.post(
            "/v1/completions",
            json=completion(prompt="two plus two", max_tokens=1, echo=True, logprobs=1),
        )
    assert response.status_code == 200, response.text
    (choice,) = response.json()["choices"]
    assert choice["text"] == "two plus twofour"
    logprobs = choice["logprobs"]
    # The first prompt token has nothing before it: no log-probability, no alternatives.
    assert logprobs["tokens"] == ["two", " plus", " two", "four"]
    assert logprobs["token_logprobs"] == [None, -0.25, -0.25, -0.25]
    assert logprobs["top_logprobs"][0] is None
    assert logprobs["top_logprobs"][1] == {" plus": -0.25}
    assert logprobs["text_offset"] == [0, 3, 8, 12]
    assert response.json()["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 1,
        "total_tokens": 4,
        "completion_tokens_details": {"reasoning_tokens": 0},
        "verifier_tokens": 0,
    }


async def test_max_tokens_0_scores_the_prompt_only() -> None:
    async with app_client(ScriptedBackend(["never"])) as client:
        response = await client.post(
            "/v1/completions", json=completion(prompt="a b", max_tokens=0, echo=True, logprobs=0)
        )
    (choice,) = response.json()["choices"]
    assert choice["text"] == "a b"
    assert choice["logprobs"]["tokens"] == ["a", " b"]
    assert response.json()["usage"]["completion_tokens"] == 0


async def test_token_ids_and_batches_answer_prompt_by_prompt_n_each() -> None:
    backend = ScriptedBackend(["x", "y"])
    async with app_client(backend) as client:
        ids = (await client.post("/tokenize", json={"prompt": "one two"})).json()["tokens"]
        response = await client.post(
            "/v1/completions", json=completion(prompt=[ids, ids[1:]], max_tokens=2, n=2)
        )
        texts = await client.post(
            "/v1/completions", json=completion(prompt=["a", "b", "c"], max_tokens=1)
        )
    choices = response.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    assert [c["text"] for c in choices] == ["x", "y", "x", "y"]
    echoed = [call.prompt for call in backend.calls if call.method == "echo"]
    assert echoed[:2] == [TextPrompt("one two"), TextPrompt(" two")]
    assert [c["index"] for c in texts.json()["choices"]] == [0, 1, 2]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
        (
            {"prompt": "a", "echo": True, "reasoning_strategy": "majority_vote"},
            "reasoning_strategy",
        ),
        ({"prompt": [[1, 2], [3]], "stream": True}, "stream"),
        ({"prompt": "a", "echo": True, "logprobs": 21}, "logprobs"),
        ({"prompt": []}, "prompt"),
    ],
)
async def test_plain_requests_that_cannot_be_served_are_400s(
    fields: dict[str, Any], param: str
) -> None:
    async with app_client(ScriptedBackend()) as client:
        response = await client.post("/v1/completions", json=completion(**fields))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_tokenizer_routes_round_trip() -> None:
    async with app_client(ScriptedBackend()) as client:
        tokenized = (
            await client.post(
                "/tokenize", json={"prompt": "hello world", "return_token_strs": True}
            )
        ).json()
        text = (await client.post("/detokenize", json={"tokens": tokenized["tokens"]})).json()
        chat = await client.post(
            "/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        info = (await client.get("/tokenizer_info")).json()
        neither = await client.post("/tokenize", json={})
    assert tokenized["count"] == 2 and tokenized["token_strs"] == ["hello", " world"]
    assert tokenized["max_model_len"] == 2048
    assert text == {"prompt": "hello world"}
    assert chat.json()["count"] == 1  # the scripted template renders one word
    assert info["eos_token"] == "</s>"
    assert neither.status_code == 400


async def test_an_unknown_model_is_a_404_that_labels_no_metric_with_it() -> None:
    async with app_client(ScriptedBackend()) as client:
        response = await client.post(
            "/v1/completions", json={"model": "made-up", "prompt": "a", "echo": True}
        )
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 404
    assert 'model="made-up"' not in metrics
    assert (
        'ttc_requests_total{model="unknown",status="client_error",strategy="none"} 1.0' in metrics
    )
