"""lm-eval scores a multiple-choice task through the server, unchanged: its `local-completions`
model posts token ids with `echo`, `max_tokens` 1 and `logprobs`, and with
`tokenizer_backend=auto` tokenizes through the server's `/tokenize` (found by probing
`/tokenizer_info`), so it needs no tokenizer files. Each item's log-likelihoods must equal those
of lm-eval's own `hf` model on the same converted weights in the same precision."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.smollm2 import converted_model_dir
from tests.e2e.conftest import MODEL
from tests.lm_eval_run import completions_args, go_offline, loglikelihoods

pytestmark = pytest.mark.e2e

# The server's and the reference's precision must agree for 1e-3 to hold.
DTYPE = "float32"


def test_lm_eval_scores_through_the_server_as_it_does_locally(
    gateway_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    go_offline(monkeypatch, tmp_path)
    served = loglikelihoods("local-completions", completions_args(gateway_url, MODEL))
    local = loglikelihoods(
        "hf", {"pretrained": str(converted_model_dir()), "dtype": DTYPE, "device": "cpu"}
    )
    assert len(served) == len(local) == 8
    for through_server, in_process in zip(served, local, strict=True):
        assert through_server == pytest.approx(in_process, abs=1e-3)
