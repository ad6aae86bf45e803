"""The vLLM backend: vLLM servers behind the `Backend` protocol, over their OpenAI-compatible API.

`VLLMBackend` holds what every request shares: one pooled client, the replica URLs, which of
them is down, how many calls each has in flight, and the served model's name. Each request
opens a `VLLMSession` (`backends.vllm_session`), pinned to one replica so that its prefix cache
serves the request's shared prefixes; a new session goes to the replica with the fewest calls
in flight, since a search holds its replica far longer than a plain request does.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from backends.base import BackendSettings
from backends.errors import BackendUnavailable
from backends.vllm_client import HTTPClients, VLLMClient
from backends.vllm_session import VLLMSession

__all__ = ["Replicas", "VLLMBackend", "VLLMBackendSettings", "VLLMReplicaSettings"]

logger = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 5.0
# How long a replica that refused a connection is left out of new sessions.
_DOWN_S = 10.0


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


class Replicas:
    """The replica URLs, the calls in flight on each, which are down, and the served model."""

    def __init__(self, urls: Sequence[str], model: str | None) -> None:
        if not urls:
            raise ValueError("the vLLM backend needs at least one replica URL")
        self.urls = tuple(urls)
        self.model = model
        self._in_flight = dict.fromkeys(self.urls, 0)
        self._down_until: dict[str, float] = {}
        self._turn = itertools.count()

    def next(self) -> str:
        """The replica for a new session: the least loaded of those not down (all of them if
        every one is down); ties go in turn, so that idle replicas share new sessions."""
        url = self.least_loaded(())
        assert url is not None, "there is always a replica"
        return url

    def other_than(self, tried: Sequence[str]) -> str | None:
        """The least loaded replica not tried yet, preferring those not marked down."""
        return self.least_loaded(tried)

    def least_loaded(self, exclude: Sequence[str]) -> str | None:
        left = [url for url in self.urls if url not in exclude]
        if len(left) <= 1:
            return next(iter(left), None)
        now = time.monotonic()
        up = [url for url in left if self._down_until.get(url, 0.0) <= now] or left
        start = next(self._turn) % len(up)
        return min(up[start:] + up[:start], key=self._in_flight.__getitem__)

    def mark_down(self, url: str) -> None:
        """Skip `url` in new sessions for a while: it refused a connection."""
        if self._down_until.get(url, 0.0) <= time.monotonic():
            logger.warning("vLLM replica %s is unreachable; skipping it for %.0f s", url, _DOWN_S)
        self._down_until[url] = time.monotonic() + _DOWN_S

    def started(self, url: str) -> None:
        """A call to `url` is in flight."""
        self._in_flight[url] += 1

    def finished(self, url: str) -> None:
        """A call to `url` has ended."""
        self._in_flight[url] -= 1

    def in_flight(self, url: str) -> int:
        """Calls in flight on `url`."""
        return self._in_flight[url]


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
