"""What every HTTP client of a vLLM server shares: settings, pooled clients, error mapping, JSON.

Every vLLM server the gateway talks to (generator replicas, reward models, a judge) gets one
pooled client from `HTTPClients`, configured by the `vllm` settings group. httpx's exceptions and
vLLM's error bodies are translated here, once, into the backend error tree, as httpx's own
`map_httpcore_exceptions` does for httpcore.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
from pydantic import BaseModel, Field

from backends.errors import BackendResponseError, BackendTimeout, BackendUnavailable

__all__ = [
    "JSON",
    "HTTPClients",
    "VLLMClientSettings",
    "error_message",
    "json_body",
    "loads",
    "map_httpx_errors",
]

JSON = dict[str, Any]

logger = logging.getLogger(__name__)


class VLLMClientSettings(BaseModel):
    """How the gateway talks to vLLM's OpenAI-compatible servers."""

    timeout_s: float = Field(default=300.0, gt=0, description="Read timeout of one vLLM call.")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_connections: int = Field(
        default=1024, ge=1, description="Pooled connections, all replicas."
    )
    api_key: str | None = Field(default=None, description="Sent as a bearer token to vLLM.")


class HTTPClients:
    """Opens the pooled clients of the app's vLLM servers, and closes them all at shutdown."""

    def __init__(self, settings: VLLMClientSettings) -> None:
        self._settings = settings
        self._opened: list[httpx.AsyncClient] = []

    def open(self) -> httpx.AsyncClient:
        """A new pooled client, for one server (or one set of replicas) and every request."""
        settings = self._settings
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_connections,
            ),
            headers=headers,
        )
        self._opened.append(client)
        return client

    async def aclose(self) -> None:
        """Close every client opened here, each even if another fails to close."""
        closed = await asyncio.gather(*(c.aclose() for c in self._opened), return_exceptions=True)
        for failure in closed:
            if failure is not None:
                logger.warning("closing a model server's client failed: %r", failure)


@contextlib.contextmanager
def map_httpx_errors(url: str) -> Iterator[None]:
    """Translate httpx's exceptions into the backend error tree, once, at the boundary.

    Messages reach clients, so they name no internal address; the log line does.
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        logger.warning("model server %s timed out: %r", url, exc)
        raise BackendTimeout(
            f"the model server did not answer in time ({type(exc).__name__})"
        ) from exc
    except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
        logger.warning("model server %s unreachable: %r", url, exc)
        raise BackendUnavailable("the model server is unreachable") from exc
    except httpx.HTTPError as exc:
        logger.warning("call to model server %s failed: %r", url, exc)
        raise BackendResponseError(f"the model server call failed ({type(exc).__name__})") from exc


def json_body(response: httpx.Response, url: str) -> JSON:
    """The JSON object of a successful response; an error status raises the mapped error."""
    if response.status_code >= 400:
        try:
            message = error_message(response.json())
        except ValueError:
            message = f"the model server answered {response.status_code}: {response.text[:200]}"
        logger.warning("model server %s answered %d: %s", url, response.status_code, message)
        if response.status_code == 503:
            raise BackendUnavailable(message)
        raise BackendResponseError(message, status_code=response.status_code)
    return loads(response.text)


def loads(text: str) -> JSON:
    """Parse a body that must be a JSON object."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BackendResponseError("the model server sent a body that is not JSON") from exc
    if not isinstance(data, dict):
        raise BackendResponseError("the model server sent JSON that is not an object")
    return data


def error_message(data: Any) -> str:
    """The message of a vLLM (or FastAPI) error body."""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return f"the model server answered with an error: {str(data)[:200]}"
