"""DeepConf through the HTTP surface: the server knows which verifiers score log-probabilities."""

from __future__ import annotations

from backends.scripted import ScriptedBackend
from tests.factories import app_client, chat_body


def deepconf(verifier: str) -> dict[str, object]:
    return chat_body(
        reasoning_strategy="weighted_vote",
        reasoning_params={
            "n": 6,
            "verifier": verifier,
            "return_trace": True,
            "early_stop": {"method": "deepconf", "warmup": 3},
        },
    )


async def test_weighted_vote_with_deepconf_needs_a_confidence_verifier() -> None:
    async with app_client(ScriptedBackend(["so 4"])) as client:
        refused = await client.post("/v1/chat/completions", json=deepconf("llm_judge"))
        answered = await client.post("/v1/chat/completions", json=deepconf("confidence"))
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "reasoning_params.early_stop"
    assert "'llm_judge' does not score token log-probabilities" in error["message"]
    # The out-of-the-box `confidence` verifier is one: three traces streamed after the warm-up.
    assert answered.status_code == 200
    body = answered.json()
    traces = body["reasoning_trace"]["deepconf"]["traces"]
    assert [t["phase"] for t in traces] == ["warmup"] * 3 + ["stream"] * 3
    assert body["usage"]["completion_tokens"] == 6 * 2
