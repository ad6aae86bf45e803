"""The vLLM backend: vLLM servers behind the `Backend` protocol, over their OpenAI-compatible API.

`VLLMBackend` holds what every request shares: one pooled client (`backends.vllm_client`), the
replicas (`backends.vllm_replicas`: which is down, how many calls each has in flight) and the
served model's name. Each request opens a `VLLMSession` (`backends.vllm_session`), pinned to
one replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from backends.base import BackendSettings
from backends.errors import BackendUnavailable
from backends.vllm_client import HTTPClients, VLLMClient
from backends.vllm_replicas import Replicas
from backends.vllm_session import VLLMSession

__all__ = ["VLLMBackend", "VLLMBackendSettings", "VLLMReplicaSettings"]

logger = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 5.0


class VLLMReplicaSettings(BaseModel):
    """Where a model's vLLM replicas are."""

    vllm_url: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Base URL of a vLLM replica; repeat the flag (or comma-separate) for several.",
    )

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


class VLLMBackendSettings(VLLMReplicaSettings, BackendSettings):
    """The vLLM backend's part of the server's settings (`--vllm-url`, `--model`)."""

    model: str | None = Field(
        default=None,
        description="Model name served by vLLM; discovered from /v1/models when not set.",
    )

    def check_chosen(self) -> None:
        if not self.vllm_url:
            raise ValueError("backend 'vllm' needs at least one --vllm-url (or TTC_VLLM_URL)")


class VLLMBackend:
    """vLLM servers (one or more replicas of one model) behind the `Backend` protocol.

    The pooled client it is given stays its giver's to close (`HTTPClients` in the app).
    """

    name: ClassVar[str] = "vllm"
    settings_model: ClassVar[type[BackendSettings]] = VLLMBackendSettings

    def __init__(self, client: VLLMClient, urls: Sequence[str], model: str | None = None) -> None:
        self._client = client
        self._replicas = Replicas(urls, model)

    @classmethod
    async def create(cls, settings: VLLMBackendSettings, clients: HTTPClients) -> VLLMBackend:
        """The backend the settings describe; its one pooled client comes from `clients`."""
        return cls(clients.open(), settings.vllm_url, settings.model)

    async def model_name(self) -> str:
        if self._replicas.model is None:
            # The probe of every replica learns the name from the first that serves one.
            await self.check_ready()
        assert self._replicas.model is not None, "check_ready learns the model or raises"
        return self._replicas.model

    def session(self, request_id: str | None = None, deadline: float | None = None) -> VLLMSession:
        return VLLMSession(
            self._client, self._replicas, self.model_name, request_id=request_id, deadline=deadline
        )

    async def check_ready(self) -> None:
        # All replicas at once, each briefly: one hung replica must not hang the probe, and
        # one dead replica must not take the gateway out of service while others serve.
        probes = await asyncio.gather(
            *(self._probe(url) for url in self._replicas.urls), return_exceptions=True
        )
        problems = []
        for url, probe in zip(self._replicas.urls, probes, strict=True):
            if isinstance(probe, BaseException):
                problems.append(f"{url}: {probe}")
                if isinstance(probe, BackendUnavailable):
                    self._replicas.mark_down(url)
                continue
            if self._replicas.model is None and probe:
                self._replicas.model = probe[0]
            if self._replicas.model in probe:
                continue
            problems.append(f"{url} serves {probe}, not {self._replicas.model!r}")
        if len(problems) == len(self._replicas.urls):
            raise BackendUnavailable("no vLLM replica is ready: " + "; ".join(problems))
        for problem in problems:
            logger.warning("vLLM replica not ready: %s", problem)

    async def _probe(self, url: str) -> list[str]:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            data = await self._client.get(f"{url}/v1/models")
            return [str(m["id"]) for m in data.get("data", []) if "id" in m]

    async def aclose(self) -> None:
        # Nothing of its own to release: the client is its giver's.
        return None
