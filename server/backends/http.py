"""What every HTTP client of a vLLM server shares: the pooled client, error mapping, JSON bodies.

httpx's exceptions and vLLM's error bodies are translated here, once, into the backend error
tree, as httpx's own `map_httpcore_exceptions` does for httpcore.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx

from server.backends.base import BackendResponseError, BackendTimeout, BackendUnavailable
from server.settings import VLLMSettings

__all__ = ["JSON", "create_client", "error_message", "json_body", "loads", "map_httpx_errors"]

JSON = dict[str, Any]

logger = logging.getLogger(__name__)


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
