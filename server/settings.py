"""The server's configuration: one `Settings` class, read once from flags and `TTC_*` variables.

It is assembled from the parts' own models: the server's fields below, `--limits.*`
(`LimitsSettings`: the strategies' `Limits` and the server's admission settings), the verifier
configs of `verifiers.registry`, the vLLM client settings (`--vllm.*`), and the settings model
of every backend in `backends.registry`, whose fields join the top level (`--vllm-url`,
`--model`, `--embedded.*`). Nested groups are set from the environment with a double
underscore, for example `TTC_LIMITS__MAX_N=16`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, CliImplicitFlag, SettingsConfigDict

from backends.base import BackendSettings
from backends.registry import BACKENDS, BackendKind
from backends.vllm import VLLMReplicaSettings
from backends.vllm_client import VLLMClientSettings
from server.keys import KeyRing
from server.log_format import LogFormat
from strategies.accounting import ModelPrice
from strategies.limits import Limits
from strategies.thinking_params import ThinkingTags
from verifiers.base import VerifierConfig
from verifiers.registry import DEFAULT_VERIFIERS, AnyVerifierConfig

__all__ = [
    "DRAIN_MARGIN_S",
    "BackendName",
    "LimitsSettings",
    "ModelPrice",
    "ResponsesSettings",
    "ServedModel",
    "ServerSettings",
    "Settings",
    "ThinkingSettings",
    "TracingSettings",
    "backend_settings",
]

# What a request at its deadline still needs to unwind and send its 504, on top of the deadline.
DRAIN_MARGIN_S = 5.0

if TYPE_CHECKING:
    BackendName = str
else:
    BackendName = Literal[tuple(BACKENDS)]


class LimitsSettings(Limits):
    """`--limits.*`: the per-request ceilings and defaults strategies read, and how many
    generation requests the server admits at once (server.admission enforces these)."""

    max_concurrent_requests: int = Field(
        default=256,
        ge=1,
        description="Generation requests served at once (streams hold their slot until they end).",
    )
    max_queued_requests: int = Field(
        default=256,
        ge=0,
        description="Generation requests that may wait for a slot; past it they get 503 at once.",
    )
    queue_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Longest a request waits for a slot before it gets 503.",
    )
    max_batch_prompts: int = Field(
        default=256,
        ge=1,
        description="Prompts in one plain completions batch (each is a backend call), at most.",
    )
    max_body_bytes: int = Field(
        default=8 << 20,
        ge=1024,
        description="Largest request body, in bytes; a larger one gets 413 before it is read.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest a request body may take to arrive; past it the request gets 408.",
    )


class ThinkingSettings(BaseModel):
    """How a model delimits its thinking, where no reasoning parser of vLLM splits it off
    (`--thinking.*`, and per model in `--models`)."""

    model_config = ConfigDict(extra="forbid")

    open: str = Field(default="<think>", min_length=1, description="What opens the thinking.")
    close: str = Field(default="</think>", min_length=1, description="What closes it.")
    opened_by_template: bool = Field(
        default=False,
        description="The chat template opens the thinking itself (DeepSeek-R1's distills): the "
        "model's output starts inside it.",
    )
    native_budget: bool = Field(
        default=False,
        description="vLLM enforces thinking_token_budget itself (started with "
        "--reasoning-config): a thinking budget alone, with no minimum and no probes, is sent "
        "to it with all the candidates in one call instead of the gateway's chain per candidate.",
    )

    def tags(self) -> ThinkingTags:
        """The tags the strategies split and force by."""
        return ThinkingTags(self.open, self.close, self.opened_by_template, self.native_budget)


class TracingSettings(BaseModel):
    """OpenTelemetry traces (`--tracing.*`); the exporter is configured by the standard
    `OTEL_*` variables (server/tracing.py)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(
        default=None,
        description="Trace requests. Unset: on when OTEL_EXPORTER_OTLP_ENDPOINT or "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set.",
    )
    capture_text: bool = Field(
        default=False,
        description="Put prompts and completions on the model calls' spans. Off by default: "
        "they may hold user data.",
    )


class ResponsesSettings(BaseModel):
    """Kept responses (`--responses.*`): background runs and `store: true`, in this process or
    in Redis with `--redis-url`."""

    model_config = ConfigDict(extra="forbid")

    ttl_s: float = Field(
        default=86400.0, gt=0, description="How long a kept response lasts after its last write."
    )
    max_per_key: int = Field(
        default=1000, ge=1, description="Kept responses per API key; the oldest go first."
    )
    max_running: int = Field(
        default=256,
        ge=1,
        description="Background responses one replica runs at once; past it, 503 overloaded.",
    )
    lease_s: float = Field(
        default=15.0,
        gt=0,
        description="How long a background response outlives its replica's last renewal before "
        "a reader marks it failed.",
    )


class ServedModel(VLLMReplicaSettings):
    """A further model the gateway serves, by name, on vLLM replicas of its own."""

    model_config = ConfigDict(extra="forbid")

    verifiers: dict[str, AnyVerifierConfig] = Field(
        default_factory=dict,
        description="Verifiers of this model's requests, replacing the server's of the same name.",
    )
    thinking: ThinkingSettings = Field(
        default_factory=ThinkingSettings, description="How this model delimits its thinking."
    )

    @field_validator("vllm_url")
    @classmethod
    def _some_replica(cls, urls: list[str]) -> list[str]:
        if not urls:
            raise ValueError("a served model needs at least one vLLM URL")
        return urls


class ServerSettings(BaseSettings):
    """What the server itself reads at start-up; `Settings` adds each backend's part."""

    model_config = SettingsConfigDict(
        env_prefix="TTC_",
        env_nested_delimiter="__",
        extra="forbid",
        cli_prog_name="ttc-server",
        cli_kebab_case=True,
    )

    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to listen on.")
    backend: BackendName = Field(
        default="embedded", description="Which model server generates text."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: CliImplicitFlag[bool] = Field(
        default=False, description="Log one line per HTTP request (uvicorn's access log)."
    )
    log_format: LogFormat = Field(
        default="text",
        description=(
            "How log lines look: text, or json (one object per line with time, level, logger, "
            "message, request_id, trace_id and span_id, exception and extra fields)."
        ),
    )
    shutdown_delay_s: float = Field(
        default=0.0,
        ge=0,
        description=(
            "On SIGTERM, how long to keep serving while /ready fails, so that load balancers "
            "stop sending requests before the server drains."
        ),
    )
    drain_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "How long requests in flight may take to finish once the server drains, before "
            f"they are cancelled. Default: limits.request_timeout_s + {DRAIN_MARGIN_S:g}."
        ),
    )
    stream_keepalive_s: float = Field(
        default=10.0,
        gt=0,
        description=(
            "A stream that sent nothing for this long sends an SSE comment (`: keep-alive`), "
            "so that proxies keep the connection while a strategy is still deciding."
        ),
    )
    verifiers: dict[str, AnyVerifierConfig] = Field(
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
    models: dict[str, ServedModel] = Field(
        default_factory=dict,
        description=(
            "Further models, each on vLLM replicas of its own, as JSON: "
            '{"meta-llama/Llama-3.2-1B-Instruct": {"vllm_url": ["http://llama-0:8000"], '
            '"verifiers": {...}}}. The backend\'s own model is served as well.'
        ),
    )
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    api_keys: SecretStr | None = Field(
        default=None,
        description=(
            "API keys: a YAML or JSON key file (a path without a comma, or a name ending in .json, "
            ".yaml or .yml) of keys with aliases and limits, or comma-separated keys without "
            "limits. "
            "Unset: the server is open to anyone who can reach it."
        ),
    )
    thinking: ThinkingSettings = Field(
        default_factory=ThinkingSettings,
        description="How the served model delimits its thinking (--thinking.open, .close, "
        ".opened-by-template).",
    )
    responses: ResponsesSettings = Field(
        default_factory=ResponsesSettings,
        description="Kept responses (--responses.ttl-s, .max-per-key, .lease-s).",
    )
    tracing: TracingSettings = Field(
        default_factory=TracingSettings,
        description="OpenTelemetry traces (--tracing.enabled, --tracing.capture-text).",
    )
    answer_match_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description=(
            "Longest math-verify may take to compare a request's answers; past it its worker "
            "process is killed and the answers are grouped by text (the trace says so)."
        ),
    )
    answer_match_workers: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Worker processes that compare answers with math-verify.",
    )
    demo: bool = Field(
        default=False,
        description=(
            "Allow the published example keys (deploy/api-keys.example.yaml), for a demo; "
            "without it the server refuses to start with them."
        ),
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="Bearer token /metrics asks for. Unset: /metrics is open."
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description=(
            "Redis holding the keys' counters, shared by every replica (redis://host:6379/0). "
            "Unset: each replica counts on its own, in memory."
        ),
    )
    redis_on_error: Literal["closed", "open-rates", "open"] = Field(
        default="closed",
        description=(
            "When Redis cannot be reached: closed answers 503; open-rates admits keys without "
            "a dollar budget unmetered (503 for the others); open admits every key unmetered."
        ),
    )
    vllm: VLLMClientSettings = Field(
        default_factory=VLLMClientSettings,
        description="Clients of every vLLM server: generator replicas, reward models, judges.",
    )

    @property
    def drain_grace_s(self) -> float:
        """How long the drain waits for requests in flight: long enough for any to finish."""
        if self.drain_timeout_s is not None:
            return self.drain_timeout_s
        return self.limits.request_timeout_s + DRAIN_MARGIN_S

    @field_validator("verifiers")
    @classmethod
    def _with_defaults(cls, verifiers: dict[str, VerifierConfig]) -> dict[str, VerifierConfig]:
        return {**DEFAULT_VERIFIERS, **verifiers}

    def key_ring(self) -> KeyRing | None:
        """The keys of `api_keys`, read now; None when the server is open."""
        if self.api_keys is None:
            return None
        return KeyRing.load(self.api_keys.get_secret_value())

    @model_validator(mode="after")
    def _keys_readable(self) -> ServerSettings:
        ring = self.key_ring()  # a bad key file stops the server at start-up, saying why
        if ring is not None and not self.demo and (published := ring.published_examples()):
            raise ValueError(
                f"api_keys holds the published example keys ({', '.join(published)}), which "
                "anyone can read in the repository: supply your own keys, or pass --demo to "
                "run a demo with them"
            )
        return self

    @model_validator(mode="after")
    def _chosen_backend_can_run(self) -> ServerSettings:
        chosen = BACKENDS[self.backend].settings_model
        # Always true of `Settings`, which holds every backend's part.
        if isinstance(self, chosen):
            chosen.check_chosen(self)
        return self


def backend_settings(kinds: Iterable[BackendKind]) -> tuple[type[BackendSettings], ...]:
    """Each backend's settings model, once it is checked that none names a setting the server
    or another backend already has, and none brings a config of its own (the server's holds)."""
    taken = set(ServerSettings.model_fields)
    models = []
    for kind in kinds:
        model = kind.settings_model
        if clash := taken & set(model.model_fields):
            raise TypeError(f"backend {kind.name!r} settings reuse {', '.join(sorted(clash))}")
        if model.model_config:
            raise TypeError(f"backend {kind.name!r} settings set a model_config")
        taken |= set(model.model_fields)
        models.append(model)
    return tuple(models)


if TYPE_CHECKING:
    Settings = ServerSettings
else:
    # ServerSettings last, so that its fields lead --help and the schema.
    class Settings(*backend_settings(BACKENDS.values()), ServerSettings):
        """Everything the server reads at start-up."""
