"""Settings from flags and TTC_* variables."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ConfigDict, ValidationError
from pydantic_settings import CliApp

from backends.base import Backend, BackendSettings
from backends.embedded_settings import EmbeddedBackendSettings
from backends.registry import BACKENDS
from backends.vllm_client import HTTPClients
from server.settings import Settings, backend_settings
from tests.factories import vllm_urls


def test_defaults() -> None:
    settings = Settings()
    assert (settings.host, settings.port, settings.backend) == ("127.0.0.1", 8000, "embedded")


def test_flags_with_repeated_urls() -> None:
    settings = CliApp.run(
        Settings,
        cli_args=[
            "--backend",
            "vllm",
            "--vllm-url",
            "http://a:8000/",
            "--vllm-url",
            "http://b:8000",
            "--port",
            "9000",
            "--limits.max-n",
            "16",
            "--embedded.max-queue",
            "8",
        ],
    )
    assert vllm_urls(settings) == ["http://a:8000", "http://b:8000"]
    assert (settings.port, settings.limits.max_n) == (9000, 16)
    assert isinstance(settings, EmbeddedBackendSettings)
    assert settings.embedded.max_queue == 8


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTC_BACKEND", "vllm")
    monkeypatch.setenv("TTC_VLLM_URL", "http://a:1, http://b:2")
    monkeypatch.setenv("TTC_LIMITS__MAX_TOKENS", "1024")
    settings = Settings()
    assert vllm_urls(settings) == ["http://a:1", "http://b:2"]
    assert settings.limits.max_tokens == 1024


@pytest.mark.parametrize(
    "fields",
    [
        {"backend": "vllm"},
        {"backend": "no-such-backend"},
        {"vllm_url": ["vllm:8000"]},
        {"limits": {"max_tokens": 10, "default_max_tokens": 20}},
        {"no_such_setting": 1},
    ],
)
def test_contradictions_fail_at_start_up(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate(fields)


class ClashingSettings(BackendSettings):
    port: int = 1


class ConfiguredSettings(BackendSettings):
    model_config = ConfigDict(frozen=True)

    other: int = 1


class FakeKind:
    """A backend kind with nothing but the settings a registry line would bring."""

    def __init__(self, settings_model: type[BackendSettings]) -> None:
        self.name = "fake"
        self.settings_model = settings_model

    async def create(self, settings: Any, clients: HTTPClients) -> Backend:
        raise AssertionError("never built")


def test_every_registered_backend_joins_the_settings() -> None:
    models = backend_settings(BACKENDS.values())
    assert models == tuple(kind.settings_model for kind in BACKENDS.values())
    assert all(issubclass(Settings, model) for model in models)


@pytest.mark.parametrize(
    ("model", "complaint"),
    [(ClashingSettings, "reuse port"), (ConfiguredSettings, "model_config")],
)
def test_a_backend_cannot_take_a_setting_or_change_the_config(
    model: type[BackendSettings], complaint: str
) -> None:
    with pytest.raises(TypeError, match=complaint):
        backend_settings([*BACKENDS.values(), FakeKind(model)])


def test_further_models_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TTC_MODELS",
        '{"llama": {"vllm_url": "http://l0:8000/,http://l1:8000", '
        '"verifiers": {"judge": {"kind": "llm_judge", "url": "http://j:8000"}}}}',
    )
    monkeypatch.setenv("TTC_VLLM__ROUTING_HEADER", "X-SMG-Routing-Key")
    settings = Settings()
    assert settings.models["llama"].vllm_url == ["http://l0:8000", "http://l1:8000"]
    assert settings.models["llama"].verifiers["judge"].kind == "llm_judge"
    assert settings.vllm.routing_header == "X-SMG-Routing-Key"


@pytest.mark.parametrize(
    ("served", "complaint"),
    [
        ({"vllm_url": []}, "at least one vLLM URL"),
        ({"vllm_url": ["ftp://x"]}, "http://"),
        ({"vllm_url": ["http://x"], "replicas": 2}, "Extra inputs"),
    ],
)
def test_a_further_model_needs_replicas_and_nothing_unknown(
    served: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        Settings.model_validate({"models": {"m": served}})
