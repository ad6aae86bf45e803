"""The embedded model's settings (`--embedded.*`): the engine's part of the server's settings.

Kept apart from the engine's modules, which import torch: the server reads these settings
whichever backend runs, and the gateway's image has no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from backends.base import BackendSettings

__all__ = ["EmbeddedBackendSettings", "EmbeddedSettings"]


class EmbeddedSettings(BaseModel):
    """The in-process CPU model used when no vLLM server is configured."""

    cache_dir: Path | None = Field(
        default=None,
        description="Where the converted weights are kept; defaults to the user's cache directory.",
    )
    max_queue: int = Field(
        default=256, ge=1, description="Requests waiting for the model beyond this get 503."
    )
    threads: int | None = Field(
        default=None, ge=1, description="torch threads; default: all cores."
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="Precision of the weights; auto: bf16 where the CPU computes it natively "
        "(avx512_bf16 or amx_bf16), else fp32.",
    )


class EmbeddedBackendSettings(BackendSettings):
    """The embedded backend's part of the server's settings (`--embedded.*`)."""

    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)
