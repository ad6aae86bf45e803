"""lm-eval scores a multiple-choice task through the server, unchanged: its `local-completions`
model posts token ids with `echo`, `max_tokens` 1 and `logprobs`, and with
`tokenizer_backend=auto` tokenizes through the server's `/tokenize` (found by probing
`/tokenizer_info`), so it needs no tokenizer files. Each item's log-likelihoods must equal those
of lm-eval's own `hf` model on the same converted weights in the same precision."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.smollm2 import converted_model_dir
from tests.e2e.conftest import MODEL
from tests.lm_eval_run import completions_args, go_offline, loglikelihoods
from tests.servers import gateway_process

pytestmark = pytest.mark.e2e

# One precision on both sides, and fp32: lm-eval's hf model takes the log-softmax in the
# model's dtype, which in bf16 alone moves a log-likelihood by more than 1e-3.
DTYPE = "float32"


@pytest.fixture(scope="module")
def fp32_gateway() -> Iterator[str]:
    with gateway_process("--embedded.dtype", DTYPE) as url:
        yield url


def test_lm_eval_scores_through_the_server_as_it_does_locally(
    fp32_gateway: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    go_offline(monkeypatch, tmp_path)
    served = loglikelihoods("local-completions", completions_args(fp32_gateway, MODEL))
    local = loglikelihoods(
        "hf", {"pretrained": str(converted_model_dir()), "dtype": DTYPE, "device": "cpu"}
    )
    assert len(served) == len(local) == 8
    for through_server, in_process in zip(served, local, strict=True):
        assert through_server == pytest.approx(in_process, abs=1e-3)
