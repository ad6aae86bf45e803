"""lm-eval scores a multiple-choice task through the server, unchanged: its `local-completions`
model posts token ids with `echo`, `max_tokens` 1 and `logprobs`, and with
`tokenizer_backend=auto` tokenizes through the server's `/tokenize` (found by probing
`/tokenizer_info`), so it needs no tokenizer files. Each item's log-likelihoods must equal those
of lm-eval's own `hf` model on the same converted weights in the same precision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backends.smollm2 import converted_model_dir
from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TASK = "ttc_arith"
# The server's and the reference's precision must agree for 1e-3 to hold.
DTYPE = "bfloat16"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing may be fetched: the task's data is a local file, the weights a local directory."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    # The task's YAML names its data file relative to the checkout.
    monkeypatch.chdir(ROOT)


def loglikelihoods(model: str, model_args: dict[str, Any]) -> list[list[float]]:
    """Each item's log-likelihood of each choice, as lm-eval computed it."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    results = simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(ROOT / "tests" / "lm_eval")),
        batch_size=1,
        log_samples=True,
    )
    assert results is not None
    samples = sorted(results["samples"][TASK], key=lambda sample: sample["doc_id"])
    return [[float(resp[0]) for resp in sample["filtered_resps"]] for sample in samples]


@pytest.mark.usefixtures("offline")
def test_lm_eval_scores_through_the_server_as_it_does_locally(gateway_url: str) -> None:
    served = loglikelihoods(
        "local-completions",
        {
            "base_url": f"{gateway_url}/v1/completions",
            "model": MODEL,
            "tokenizer_backend": "auto",
            "num_concurrent": 1,
            "max_retries": 1,
        },
    )
    local = loglikelihoods(
        "hf", {"pretrained": str(converted_model_dir()), "dtype": DTYPE, "device": "cpu"}
    )
    assert len(served) == len(local) == 8
    for through_server, in_process in zip(served, local, strict=True):
        assert through_server == pytest.approx(in_process, abs=1e-3)
