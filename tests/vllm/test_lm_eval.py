"""lm-eval's loglikelihood task through the gateway on real vLLM equals vLLM called directly:
the gateway's echo scoring and tokenizer routes pass vLLM's own numbers through."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lm_eval_run import completions_args, go_offline, loglikelihoods
from tests.vllm.conftest import GENERATOR, VLLMServers


def test_lm_eval_through_the_gateway_equals_vllm_directly(
    gateway: str, vllm: VLLMServers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    go_offline(monkeypatch, tmp_path)
    through_gateway = loglikelihoods("local-completions", completions_args(gateway, GENERATOR))
    direct = loglikelihoods(
        "local-completions", completions_args(vllm.generators[0].url, GENERATOR)
    )
    assert len(through_gateway) == len(direct) == 8
    for gateway_item, vllm_item in zip(through_gateway, direct, strict=True):
        assert gateway_item == pytest.approx(vllm_item, abs=1e-3)
