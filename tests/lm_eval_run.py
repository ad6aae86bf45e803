"""Running lm-eval's tiny local task (tests/lm_eval/) from a test, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

__all__ = ["TASK", "completions_args", "go_offline", "loglikelihoods"]

ROOT = Path(__file__).resolve().parents[1]
TASK = "ttc_arith"


def go_offline(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """Nothing may be fetched: the task's data is a local file, the weights a local directory.
    Runs from the checkout, where the task's YAML finds its data file."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.chdir(ROOT)


def loglikelihoods(model: str, model_args: dict[str, Any]) -> list[list[float]]:
    """Each item's log-likelihood of each of its choices, as lm-eval computed them."""
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


def completions_args(url: str, model: str) -> dict[str, Any]:
    """lm-eval's `local-completions` pointed at a server's `/v1/completions`, tokenizing
    through the server's own tokenizer routes."""
    return {
        "base_url": f"{url}/v1/completions",
        "model": model,
        "tokenizer_backend": "auto",
        "num_concurrent": 1,
        "max_retries": 1,
    }
