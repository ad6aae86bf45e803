"""PRM and ORM verifiers over real loopback HTTP against the vLLM stand-in's /pooling and
/classify, which check the exact request shapes and answer in vLLM's response shapes."""

from __future__ import annotations

import httpx
import pytest

from backends.reward_model import VLLMRewardModel
from backends.vllm_client import VLLMClient
from bench.vllm_standin.answers import PRM_MODEL
from bench.vllm_standin.state import StandIn
from tests.loopback import Loopback
from verifiers.base import Candidate, VerifierError
from verifiers.orm import ORMConfig, ORMVerifier
from verifiers.prm import PRESETS, PRMConfig, PRMVerifier
from verifiers.registry import GuardedVerifier


@pytest.fixture
async def client(fresh: StandIn, servers: Loopback) -> VLLMClient:
    return servers.client()


def test_qwen_preset_puts_the_tag_after_each_step() -> None:
    text = PRESETS["qwen2.5-math-prm"].render("What is 1+1?", ["1+1 is 2.", "So \\boxed{2}."])
    assert text == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n"
        "1+1 is 2.<extra_0>So \\boxed{2}.<extra_0><|im_end|><|endoftext|>"
    )


def test_math_shepherd_preset() -> None:
    text = PRESETS["math-shepherd"].render("Q?", ["Step 1: a", "Step 2: b"])
    assert text == "Q? Step 1: a ки\nStep 2: b ки"


async def test_prm_sends_one_batched_request_and_reads_positive_step_scores(
    standin: StandIn, client: VLLMClient
) -> None:
    prm = PRMVerifier(VLLMRewardModel(client, standin.url, PRM_MODEL), PRESETS["qwen2.5-math-prm"])
    scores = await prm.score(
        "What is 1+1?",
        [Candidate("1+1 is 2.\n\nSo \\boxed{2}."), Candidate("It is 3.\n\n\n\nSo 3.\n\nDone.")],
    )
    (request,) = standin.requests
    assert request.path == "/pooling"
    inputs = request.body["input"]
    assert isinstance(inputs, list) and len(inputs) == 2
    assert inputs[0].count("<extra_0>") == 2 and inputs[1].count("<extra_0>") == 3
    assert "1+1 is 2.<extra_0>So \\boxed{2}.<extra_0>" in inputs[0]
    # The stand-in's n-th step scores 0.9 - 0.1 n at the positive index (1).
    assert scores.candidates[0].steps == pytest.approx((0.9, 0.8))
    assert scores.candidates[1].steps == pytest.approx((0.9, 0.8, 0.7))
    assert scores.candidates[1].value == pytest.approx(0.7)
    assert scores.tokens > 0


async def test_prm_rejects_a_model_without_the_step_tag(
    standin: StandIn, client: VLLMClient
) -> None:
    wrong = PRMConfig(url=standin.url, model=PRM_MODEL, step_tag="[STEP]").format()
    prm = PRMVerifier(VLLMRewardModel(client, standin.url, PRM_MODEL), wrong)
    with pytest.raises(VerifierError, match="prm failed: .*step tags"):
        await GuardedVerifier("prm", prm, timeout_s=5).score("q", [Candidate("a\n\nb")])
    standin.violations.clear()


async def test_orm_classify(standin: StandIn, client: VLLMClient) -> None:
    config = ORMConfig(url=standin.url, model="rm")
    orm = ORMVerifier(VLLMRewardModel(client, standin.url, "rm"), config)
    scores = await orm.score("q", [Candidate("short"), Candidate("a much longer answer " * 5)])
    (request,) = standin.requests
    assert request.path == "/classify"
    assert request.body == {
        "model": "rm",
        "input": ["q\n\nshort", "q\n\n" + "a much longer answer " * 5],
    }
    assert scores.candidates[1].value > scores.candidates[0].value


async def test_orm_token_head_reads_the_last_token(servers: Loopback) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = request.read().decode()
        assert '"task": "token_classify"' in body or '"task":"token_classify"' in body
        rows = [[[0.9, 0.1], [0.2, 0.8]], [[0.5, 0.5], [0.7, 0.3]]]
        data = [{"index": i, "object": "pooling", "data": r} for i, r in enumerate(rows)]
        return httpx.Response(200, json={"data": data, "usage": {"prompt_tokens": 8}})

    (url,) = await servers.serve(handler, "rm:8000")
    config = ORMConfig(url=url, model="rm", endpoint="pooling", positive_index=1)
    orm = ORMVerifier(VLLMRewardModel(servers.client(), config.url, "rm"), config)
    scores = await orm.score("q", [Candidate("a"), Candidate("b")])
    assert [s.value for s in scores.candidates] == [0.8, 0.3]
    assert scores.tokens == 8
