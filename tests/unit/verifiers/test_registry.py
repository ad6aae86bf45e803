"""The verifier registry: configs from settings, and the guard every verifier runs behind."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from backends.reward_model import VLLMRewardModel
from backends.scripted import ScriptedBackend
from backends.vllm_client import HTTPClients
from bench.vllm_standin.answers import PRM_MODEL
from bench.vllm_standin.state import StandIn
from server.settings import Settings
from tests.factories import free_port
from tests.loopback import loopback
from verifiers.base import Candidate, Scores, VerifierError
from verifiers.prm import PRESETS, PRMVerifier
from verifiers.registry import VERIFIERS, GuardedVerifier, create_verifiers


async def test_unreachable_reward_model_is_a_verifier_error() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with loopback() as servers:
        client = servers.client(retries=1)
        prm = PRMVerifier(VLLMRewardModel(client, dead, PRM_MODEL), PRESETS["qwen2.5-math-prm"])
        guarded = GuardedVerifier("prm", prm, timeout_s=5)
        with pytest.raises(VerifierError, match="prm failed: .*unreachable"):
            await guarded.score("q", [Candidate("a")])
        assert servers.retried == ["connect"]


async def test_slow_verifier_times_out_as_a_verifier_error() -> None:
    class Slow:
        logprobs = None

        async def score(self, question: str, candidates: Sequence[Candidate]) -> Scores:
            await asyncio.sleep(10)
            raise AssertionError("unreachable")

    with pytest.raises(VerifierError, match="timed out"):
        await GuardedVerifier("slow", Slow(), timeout_s=0.05).score("q", [])


async def test_settings_build_every_kind(standin: StandIn) -> None:
    settings = Settings.model_validate(
        {
            "verifiers": {
                "prm": {"kind": "vllm_prm", "url": standin.url, "model": PRM_MODEL},
                "orm": {"kind": "vllm_orm", "url": standin.url, "model": "rm"},
                "judge": {"kind": "llm_judge", "url": standin.url, "mode": "process"},
            }
        }
    )
    assert {name: config.kind for name, config in settings.verifiers.items()} == {
        "prm": "vllm_prm",
        "orm": "vllm_orm",
        "judge": "llm_judge",
        "llm_judge": "llm_judge",
        "confidence": "confidence",
    }
    assert set(VERIFIERS) == {"vllm_prm", "vllm_orm", "llm_judge", "confidence"}
    clients = HTTPClients(settings.vllm)
    built = create_verifiers(settings.verifiers, ScriptedBackend(), clients)
    try:
        scores = await built["prm"].score("q", [Candidate("a\n\nb")])
        assert scores.candidates[0].steps == pytest.approx((0.9, 0.8))
    finally:
        await clients.aclose()
    assert standin.violations == []


def test_a_config_of_an_unknown_kind_names_the_kinds() -> None:
    with pytest.raises(ValueError, match="vllm_prm"):
        Settings.model_validate({"verifiers": {"x": {"kind": "nope"}}})
