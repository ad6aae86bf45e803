"""The server's configuration: one `Settings` class, read once from flags and `TTC_*` variables.

Flat fields are the ones people set on the command line (`--backend`, `--vllm-url`, ...);
nested groups are set from the environment with a double underscore, for example
`TTC_LIMITS__MAX_N=16` or `TTC_EMBEDDED__MAX_QUEUE=128`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from verifiers.confidence import ConfidenceConfig
from verifiers.llm_judge import LLMJudgeConfig
from verifiers.orm import ORMConfig
from verifiers.prm import PRMConfig

__all__ = [
    "DEFAULT_VERIFIERS",
    "EmbeddedSettings",
    "LimitsSettings",
    "ModelPrice",
    "Settings",
    "VLLMSettings",
    "VerifierConfig",
]

VerifierConfig = Annotated[
    PRMConfig | ORMConfig | LLMJudgeConfig | ConfidenceConfig, Field(discriminator="kind")
]

# Configured out of the box on every backend; a setting of the same name replaces one.
DEFAULT_VERIFIERS: dict[str, VerifierConfig] = {
    "llm_judge": LLMJudgeConfig(),
    "confidence": ConfidenceConfig(),
}


class LimitsSettings(BaseModel):
    """Per-request ceilings checked at the edge, and defaults for fields a request leaves out."""

    max_n: int = Field(default=64, ge=1, description="Largest `n` a request may ask for.")
    max_tokens: int = Field(default=4096, ge=1, description="Largest `max_tokens` per request.")
    default_max_tokens: int = Field(
        default=512, ge=1, description="`max_tokens` used when a request does not set it."
    )
    request_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Deadline for a whole request; past it the client gets 504.",
    )

    search_default_tokens: int = Field(
        default=8192, ge=1, description="Tokens a search may generate when its params don't say."
    )
    search_max_tokens: int = Field(
        default=65536, ge=1, description="Most tokens one search may be allowed to generate."
    )
    search_default_seconds: float = Field(
        default=120.0, gt=0, description="Time a search may take when its params don't say."
    )
    search_max_seconds: float = Field(
        default=540.0, gt=0, description="Most time one search may be allowed."
    )

    @model_validator(mode="after")
    def _default_within_ceiling(self) -> LimitsSettings:
        if self.default_max_tokens > self.max_tokens:
            raise ValueError("default_max_tokens must not exceed max_tokens")
        if self.search_default_tokens > self.search_max_tokens:
            raise ValueError("search_default_tokens must not exceed search_max_tokens")
        if self.search_default_seconds > self.search_max_seconds:
            raise ValueError("search_default_seconds must not exceed search_max_seconds")
        return self


class VLLMSettings(BaseModel):
    """How the gateway talks to vLLM's OpenAI-compatible servers."""

    timeout_s: float = Field(default=300.0, gt=0, description="Read timeout of one vLLM call.")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_connections: int = Field(
        default=1024, ge=1, description="Pooled connections, all replicas."
    )
    api_key: str | None = Field(default=None, description="Sent as a bearer token to vLLM.")


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


class ModelPrice(BaseModel):
    """What a model's tokens cost, in US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: float = Field(default=0.0, ge=0, description="Per million prompt tokens.")
    completion: float = Field(default=0.0, ge=0, description="Per million generated tokens.")
    verifier: float = Field(
        default=0.0, ge=0, description="Per million tokens read or written by verifiers."
    )

    def cost(self, prompt_tokens: int, completion_tokens: int, verifier_tokens: int) -> float:
        """Dollars for these token counts."""
        total = (
            prompt_tokens * self.prompt
            + completion_tokens * self.completion
            + verifier_tokens * self.verifier
        )
        return total / 1_000_000


class Settings(BaseSettings):
    """Everything the server reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="TTC_",
        env_nested_delimiter="__",
        extra="forbid",
        cli_prog_name="ttc-server",
        cli_kebab_case=True,
    )

    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to listen on.")
    backend: Literal["embedded", "vllm"] = Field(
        default="embedded", description="Which model server generates text."
    )
    vllm_url: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Base URL of a vLLM replica; repeat the flag (or comma-separate) for several.",
    )
    model: str | None = Field(
        default=None,
        description="Model name served by vLLM; discovered from /v1/models when not set.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    verifiers: dict[str, VerifierConfig] = Field(
        default_factory=dict,
        description=(
            'Verifiers by name, as JSON: {"prm": {"kind": "vllm_prm", "url": ..., "model": ...}}. '
            "llm_judge and confidence are always configured unless replaced."
        ),
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description=(
            "Token prices by served model name, in USD per million tokens, as JSON: "
            '{"Qwen/Qwen2.5-1.5B-Instruct": {"prompt": 0.02, "completion": 0.06, '
            '"verifier": 0.1}}. Unpriced models get no cost metrics.'
        ),
    )
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)

    @field_validator("vllm_url", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        # TTC_VLLM_URL="http://a:8000,http://b:8000" reads more naturally than a JSON list.
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            urls = [part.strip() for item in value for part in str(item).split(",")]
            return [url.rstrip("/") for url in urls if url]
        return value

    @field_validator("vllm_url")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"vLLM URL must start with http:// or https://: {url!r}")
        return urls

    @field_validator("verifiers")
    @classmethod
    def _with_defaults(cls, verifiers: dict[str, VerifierConfig]) -> dict[str, VerifierConfig]:
        return {**DEFAULT_VERIFIERS, **verifiers}

    @model_validator(mode="after")
    def _vllm_needs_urls(self) -> Settings:
        if self.backend == "vllm" and not self.vllm_url:
            raise ValueError("backend 'vllm' needs at least one --vllm-url (or TTC_VLLM_URL)")
        return self
