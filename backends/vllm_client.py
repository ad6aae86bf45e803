"""What every HTTP client of a vLLM server shares: settings, the pooled client, retries, errors.

Every vLLM server the gateway talks to (generator replicas, reward models, a judge) gets one
`VLLMClient` from `HTTPClients`, configured by the `vllm` settings group. It is aiohttp, not
httpx: httpx's pool checks every pooled connection on each request, which at a few hundred
connections cost more CPU than everything else the gateway does (../shared/GATEWAY.md).

A call vLLM did not process (the connection was refused or reset before any response, or vLLM
answered 503 or 429) is sent again: at once to another replica when the call's route has one,
otherwise after a jittered exponential backoff (at least the `Retry-After` vLLM asked for), a
bounded number of times and never past the request's deadline. A call that may have run (a read
timeout, a body cut short) is never sent again: that would double the work and the bill.
aiohttp's exceptions and vLLM's error bodies (an error chunk of a stream too) are translated
here, once, into the backend error tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Annotated, Any, Protocol

import aiohttp
import orjson
from opentelemetry import propagate, trace
from pydantic import AfterValidator, BaseModel, Field

from backends.errors import (
    BackendError,
    BackendResponseError,
    BackendTimeout,
    BackendUnavailable,
)
from backends.routing import checked_routing_header

__all__ = [
    "JSON",
    "HTTPClients",
    "RetryObserver",
    "Route",
    "VLLMClient",
    "VLLMClientSettings",
    "error_message",
    "error_param",
    "events",
    "loads",
    "stream_error",
]

JSON = dict[str, Any]
# Told the reason of each retry: "connect", "reset", "503" or "429".
RetryObserver = Callable[[str], None]

logger = logging.getLogger(__name__)

# vLLM's uvicorn drops idle keep-alive connections after 5 s; dropping ours first keeps a call
# from being written to a socket the server is closing.
_KEEPALIVE_S = 4.0
# SSE lines with many top log-probabilities outgrow aiohttp's 64 KiB default.
_READ_BUFFER = 2**20
_RETRY_STATUSES = (429, 503)


class VLLMClientSettings(BaseModel):
    """How the gateway talks to vLLM's OpenAI-compatible servers."""

    timeout_s: float = Field(default=300.0, gt=0, description="Read timeout of one vLLM call.")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_connections: int = Field(
        default=1024, ge=1, description="Pooled connections to one server (all its replicas)."
    )
    api_key: str | None = Field(default=None, description="Sent as a bearer token to vLLM.")
    retries: int = Field(
        default=3,
        ge=0,
        description=(
            "Times a call vLLM did not process (connection refused or reset before a response, "
            "503, 429) is sent again."
        ),
    )
    retry_backoff_s: float = Field(
        default=0.05, ge=0, description="First backoff before a retry on the same replica."
    )
    retry_backoff_max_s: float = Field(default=2.0, ge=0, description="Longest backoff.")
    routing_header: Annotated[str | None, AfterValidator(checked_routing_header)] = Field(
        default=None,
        description=(
            "Header carrying the request's routing key (a random id the gateway makes per "
            "request) on every call of a request, for a router in front of vLLM: X-Session-ID "
            "for vllm-router, X-SMG-Routing-Key for SGLang's model gateway, the --session-key "
            "value of vLLM production-stack."
        ),
    )
    affinity_header: str | None = Field(
        default=None,
        description=(
            "Response header copied onto the same request's later calls, for a router that "
            "pins a session by a token it hands out (llm-d: x-session-token)."
        ),
    )


class Route(Protocol):
    """Where one call goes, and where it goes instead when the replica did not process it."""

    @property
    def url(self) -> str:
        """The base URL the call goes to now."""
        ...

    def reroute(self, tried: Sequence[str], refused: bool) -> bool:
        """Move to a replica this call has not tried; False when there is none. `refused`:
        the replica refused the connection, so it is likely down."""
        ...


class _FixedRoute:
    """One server, no replicas to move to."""

    def __init__(self, url: str) -> None:
        self.url = url

    def reroute(self, tried: Sequence[str], refused: bool) -> bool:
        return False


class VLLMClient:
    """One pooled aiohttp client to one vLLM server or set of replicas, with the retry policy."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: VLLMClientSettings,
        on_retry: RetryObserver | None = None,
        traced: bool = False,
    ) -> None:
        self._session = session
        self.settings = settings
        self._on_retry = on_retry
        self._traced = traced

    async def get(self, url: str) -> JSON:
        """GET a JSON object once (readiness probes: a retry would only delay the answer)."""
        with _mapped(url):
            async with self._session.get(url) as response:
                return await _json(response, url)

    async def post(
        self,
        route: Route | str,
        path: str,
        body: JSON,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> JSON:
        """POST `body` and return the JSON object vLLM answers, retrying what may be retried."""
        async with self.call(route, path, body, headers, deadline) as response:
            return loads(await response.read())

    @contextlib.asynccontextmanager
    async def call(
        self,
        route: Route | str,
        path: str,
        body: JSON,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST `body`; yields the response once vLLM has accepted it (status below 400), for
        the caller to read within the block. `deadline` is on the event loop's clock."""
        route = _FixedRoute(route) if isinstance(route, str) else route
        data = orjson.dumps(body)
        tried: list[str] = []
        failure: BackendError
        while True:
            url = route.url
            tried.append(url)
            try:
                response = await self._send(url + path, data, headers)
            except _Unprocessed as unprocessed:
                failure, reason, asked = unprocessed.error, unprocessed.reason, 0.0
            else:
                if response.status not in _RETRY_STATUSES:
                    async with response:
                        if response.status >= 400:
                            await _json(response, url)  # raises the error vLLM described
                        with _mapped(url):
                            yield response
                    return
                async with response:
                    failure = _status_error(response.status, await _text(response), url)
                reason, asked = str(response.status), _retry_after(response.headers)
            retry = len(tried) - 1
            if retry >= self.settings.retries:
                raise failure
            wait = 0.0
            if not route.reroute(tried, refused=reason == "connect"):
                # The same replica again, once it has had the moment it asked for, or a
                # jittered one so that the calls it turned away do not return all at once.
                settings = self.settings
                cap = min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2**retry)
                wait = max(asked, random.uniform(0, cap))
            loop = asyncio.get_running_loop()
            if deadline is not None and loop.time() + wait >= deadline:
                raise failure
            if self._on_retry is not None:
                self._on_retry(reason)
            if self._traced:
                trace.get_current_span().add_event("retry", {"reason": reason, "url": url})
            logger.debug("retrying %s%s after %s in %.3f s", route.url, path, reason, wait)
            if wait:
                await asyncio.sleep(wait)

    async def _send(
        self, url: str, data: bytes, headers: Mapping[str, str] | None
    ) -> aiohttp.ClientResponse:
        """The response's status and headers; `_Unprocessed` when vLLM never saw the call."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        if self._traced:
            # The current span (the call's) as the parent of the model server's own.
            propagate.inject(sent)
        try:
            return await self._session.post(url, data=data, headers=sent)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            logger.warning("model server %s unreachable: %r", url, exc)
            raise _Unprocessed("connect", "the model server is unreachable", exc) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            # Closed before any byte of a response: vLLM never ran the call.
            logger.warning("model server %s closed the connection: %r", url, exc)
            raise _Unprocessed("reset", "the model server closed the connection", exc) from exc
        except TimeoutError as exc:
            raise _timeout(url, exc) from exc
        except aiohttp.ClientError as exc:
            raise _failed(url, exc) from exc


class HTTPClients:
    """Opens the pooled clients of the app's vLLM servers, and closes them all at shutdown."""

    def __init__(
        self,
        settings: VLLMClientSettings,
        on_retry: RetryObserver | None = None,
        traced: bool = False,
    ) -> None:
        self._settings = settings
        self._on_retry = on_retry
        self._traced = traced
        self._opened: list[aiohttp.ClientSession] = []

    def open(self) -> VLLMClient:
        """A new pooled client, for one server (or one set of replicas) and every request.
        Call it while the event loop runs (the app's lifespan)."""
        settings = self._settings
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=settings.max_connections, limit_per_host=0, keepalive_timeout=_KEEPALIVE_S
            ),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=settings.connect_timeout_s, sock_read=settings.timeout_s
            ),
            headers=headers,
            read_bufsize=_READ_BUFFER,
            raise_for_status=False,
        )
        self._opened.append(session)
        return VLLMClient(session, settings, self._on_retry, self._traced)

    async def aclose(self) -> None:
        """Close every client opened here, each even if another fails to close."""
        closed = await asyncio.gather(*(s.close() for s in self._opened), return_exceptions=True)
        for failure in closed:
            if failure is not None:
                logger.warning("closing a model server's client failed: %r", failure)


class _Unprocessed(Exception):
    """A call vLLM never saw: safe to send again."""

    def __init__(self, reason: str, message: str, cause: BaseException) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = BackendUnavailable(message)
        self.error.__cause__ = cause


@contextlib.contextmanager
def _mapped(url: str) -> Any:
    """aiohttp's exceptions while a response is read, as backend errors (never retried)."""
    try:
        yield
    except TimeoutError as exc:
        raise _timeout(url, exc) from exc
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
        logger.warning("model server %s unreachable: %r", url, exc)
        raise BackendUnavailable("the model server is unreachable") from exc
    except aiohttp.ClientError as exc:
        raise _failed(url, exc) from exc


def _timeout(url: str, exc: BaseException) -> BackendTimeout:
    logger.warning("model server %s timed out: %r", url, exc)
    return BackendTimeout(f"the model server did not answer in time ({type(exc).__name__})")


def _failed(url: str, exc: BaseException) -> BackendError:
    # Messages reach clients, so they name no internal address; the log line does.
    logger.warning("call to model server %s failed: %r", url, exc)
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientOSError):
        return BackendUnavailable(f"the model server dropped the response ({type(exc).__name__})")
    return BackendResponseError(f"the model server call failed ({type(exc).__name__})")


async def _text(response: aiohttp.ClientResponse) -> str:
    return (await response.read()).decode("utf-8", "replace")


async def _json(response: aiohttp.ClientResponse, url: str) -> JSON:
    """The JSON object of a successful response; an error status raises the mapped error."""
    text = await _text(response)
    if response.status >= 400:
        raise _status_error(response.status, text, url)
    return loads(text)


def _status_error(status: int, text: str, url: str) -> BackendError:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        message, param = f"the model server answered {status}: {text[:200]}", None
    else:
        message, param = error_message(data), error_param(data)
    logger.warning("model server %s answered %d: %s", url, status, message)
    if status == 503:
        return BackendUnavailable(message)
    return BackendResponseError(message, status_code=status, param=param)


def _retry_after(headers: Mapping[str, str]) -> float:
    """The seconds of a `Retry-After` header (an HTTP date is rare from vLLM and ignored)."""
    try:
        return max(0.0, float(headers.get("Retry-After", "0")))
    except ValueError:
        return 0.0


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[JSON]:
    """The JSON chunks of an SSE response up to `[DONE]`; an error chunk raises."""
    async for line in response.content:
        if not line.startswith(b"data:"):
            continue
        payload = line[len(b"data:") :].strip()
        if payload == b"[DONE]":
            return
        chunk = loads(payload)
        if "error" in chunk or chunk.get("object") == "error":
            raise stream_error(chunk)
        yield chunk


def loads(text: str | bytes) -> JSON:
    """Parse a body that must be a JSON object."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BackendResponseError("the model server sent a body that is not JSON") from exc
    if not isinstance(data, dict):
        raise BackendResponseError("the model server sent JSON that is not an object")
    return data


def error_param(data: Any) -> str | None:
    """The request field a vLLM error body blames, when it names one."""
    error = data.get("error") if isinstance(data, dict) else None
    param = error.get("param") if isinstance(error, dict) else None
    return param if isinstance(param, str) and param else None


def stream_error(chunk: Any) -> BackendResponseError:
    """The error a vLLM stream reported in a chunk, with the status and field it names."""
    error = chunk.get("error") if isinstance(chunk, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    status = code if isinstance(code, int) else None
    return BackendResponseError(error_message(chunk), status_code=status, param=error_param(chunk))


def error_message(data: Any) -> str:
    """The message of a vLLM (or FastAPI) error body."""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return f"the model server answered with an error: {str(data)[:200]}"
