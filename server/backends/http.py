"""What every HTTP client of a vLLM server shares: the pooled client, error mapping, JSON bodies.

httpx's exceptions and vLLM's error bodies are translated here, once, into the backend error
tree, as httpx's own `map_httpcore_exceptions` does for httpcore.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx

from server.backends.base import BackendResponseError, BackendTimeout, BackendUnavailable
from server.settings import VLLMSettings

__all__ = ["JSON", "create_client", "error_message", "json_body", "loads", "map_httpx_errors"]

JSON = dict[str, Any]


def create_client(settings: VLLMSettings) -> httpx.AsyncClient:
    """The one pooled client shared by every replica and request."""
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
        limits=httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
        ),
        headers=headers,
    )


@contextlib.contextmanager
def map_httpx_errors(url: str) -> Iterator[None]:
    """Translate httpx's exceptions into the backend error tree, once, at the boundary."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise BackendTimeout(
            f"vLLM at {url} did not answer in time ({type(exc).__name__})"
        ) from exc
    except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
        raise BackendUnavailable(f"vLLM at {url} is unreachable: {exc}") from exc
    except httpx.HTTPError as exc:
        raise BackendResponseError(f"vLLM call to {url} failed: {exc}") from exc


def json_body(response: httpx.Response, url: str) -> JSON:
    """The JSON object of a successful response; an error status raises the mapped error."""
    if response.status_code >= 400:
        try:
            message = error_message(response.json(), url)
        except ValueError:
            message = f"vLLM at {url} answered {response.status_code}: {response.text[:200]}"
        if response.status_code == 503:
            raise BackendUnavailable(message)
        raise BackendResponseError(message, status_code=response.status_code)
    return loads(response.text, url)


def loads(text: str, url: str) -> JSON:
    """Parse a body that must be a JSON object."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BackendResponseError(f"vLLM at {url} sent a body that is not JSON") from exc
    if not isinstance(data, dict):
        raise BackendResponseError(f"vLLM at {url} sent JSON that is not an object")
    return data


def error_message(data: Any, url: str) -> str:
    """The message of a vLLM (or FastAPI) error body."""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return f"vLLM at {url} answered with an error: {str(data)[:200]}"
