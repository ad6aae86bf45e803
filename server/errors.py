"""Every error leaves the server as OpenAI's error object; the one table that maps them is here.

The errors the server raises on purpose share one root, `GatewayError`; each layer defines its
own branch, and this is the whole tree with the HTTP status each maps to::

    GatewayError                     backends.errors
    ├── InvalidRequest          400  server.protocol.errors: a field asks for what we can't do
    ├── Unauthorized            401  no API key, or not one of ours (server.keys)
    ├── KeyLimitExceeded        429  within the server's limits, over its key's (server.quota)
    ├── ModelNotFound           404  the request names a model this server does not serve
    ├── ResponseNotFound        404  no stored response of that id the caller may see
    ├── ResponseStoreError      503  server.response_store: kept responses (Redis) unreachable
    ├── RequestTimeout          504  the whole request ran past the server's deadline
    ├── BodyTooLarge            413  the request body is over --limits.max-body-bytes
    ├── BodyTimeout             408  the request body did not arrive within --limits.body-timeout-s
    ├── ServerBusy              503  turned away before running, with Retry-After
    │   ├── Overloaded               every slot taken and the wait queue full, or the wait ran out
    │   ├── ShuttingDown             the server is draining before it exits
    │   └── LimitStoreUnavailable    the keys' shared counters (Redis) cannot be reached
    ├── LimitExceeded           400  strategies.limits: a field is over the server's ceiling
    ├── StrategyError           400  strategies.base
    │   ├── UnknownStrategyError     `reasoning_strategy` names no registered strategy
    │   └── InvalidParamsError       `reasoning_params` does not validate
    ├── OutOfTime               504  strategies.budget: a one-call strategy ran out of its
    │                                `budget.seconds` (it has no partial answer)
    ├── VerifierError           502  verifiers.base: a verifier failed or timed out
    └── BackendError            502  backends.errors: a model server call failed
        ├── BackendUnavailable  503  no replica reachable, or the embedded queue is full
        ├── BackendTimeout      504  a call ran past its timeout
        ├── BackendResponseError     an error status or a malformed body (400 when the model
        │                            server refused the request itself)
        └── FeatureUnavailable  501  the backend lacks an engine the request needs

Anything else is a 500 with a generic message; the traceback goes to the log, not the client.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Send

from backends.errors import (
    BackendError,
    BackendResponseError,
    BackendTimeout,
    BackendUnavailable,
    FeatureUnavailable,
    GatewayError,
)
from server.protocol.errors import ErrorInfo, ErrorResponse, InvalidRequest
from server.response_store import ResponseStoreError
from strategies.base import InvalidParamsError, StrategyError, UnknownStrategyError
from strategies.budget import OutOfTime
from strategies.limits import LimitExceeded
from verifiers.base import VerifierError

__all__ = [
    "BodyTimeout",
    "BodyTooLarge",
    "KeyLimitExceeded",
    "LimitStoreUnavailable",
    "ModelNotFound",
    "Overloaded",
    "RequestTimeout",
    "ResponseNotFound",
    "ServerBusy",
    "ShuttingDown",
    "Unauthorized",
    "error_headers",
    "error_response",
    "error_status",
    "install_error_handlers",
    "send_error",
]

logger = logging.getLogger(__name__)


class ModelNotFound(GatewayError, LookupError):
    """The request names a model this server does not serve."""

    param = "model"

    def __init__(self, model: str, served: Sequence[str]) -> None:
        names = ", ".join(repr(name) for name in served)
        super().__init__(f"The model {model!r} does not exist; this server serves {names}.")


class ResponseNotFound(GatewayError, LookupError):
    """No stored response of that id that the caller may see."""

    param = "response_id"


class RequestTimeout(GatewayError, TimeoutError):
    """The whole request ran past the server's deadline."""


class BodyTooLarge(GatewayError):
    """The request body is larger than the server takes."""


class BodyTimeout(GatewayError):
    """The request body did not arrive in time."""


class ServerBusy(GatewayError):
    """The server turned a request away before running it; the client may retry elsewhere or
    after `retry_after_s` seconds (sent as `Retry-After`)."""

    retry_after_s = 1


class Overloaded(ServerBusy):
    """Every admission slot is taken and the wait queue is full, or the wait ran out."""


class ShuttingDown(ServerBusy):
    """The server is draining before it exits: it finishes what it runs and takes nothing new."""


class LimitStoreUnavailable(ServerBusy):
    """The shared counters of keys' limits (Redis) cannot be reached, and the server fails
    closed (`--redis-on-error`)."""


class Unauthorized(GatewayError):
    """The request carries no API key, or one this server does not know."""


class KeyLimitExceeded(GatewayError):
    """The request is within the server's limits but over its key's: a 429.

    `kind` is OpenAI's error type (`requests`, `tokens`, `insufficient_quota`), `code`
    `rate_limit_exceeded` or `insufficient_quota`; `retry_after_s` is when the limit's window
    rolls over, or None when waiting cannot help (a ceiling of the key).
    """

    def __init__(
        self,
        message: str,
        kind: str,
        code: str,
        retry_after_s: int | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.retry_after_s = retry_after_s
        self.param = param


@dataclass(frozen=True)
class _Mapped:
    status: int
    type: str
    code: str


_INVALID = "invalid_request_error"
_UNAVAILABLE = "service_unavailable_error"

# Most specific first: an error takes the row of the first class it is an instance of.
_TABLE: tuple[tuple[type[GatewayError], _Mapped], ...] = (
    (UnknownStrategyError, _Mapped(400, _INVALID, "unknown_strategy")),
    (InvalidParamsError, _Mapped(400, _INVALID, "invalid_reasoning_params")),
    (StrategyError, _Mapped(400, _INVALID, "strategy_error")),
    (InvalidRequest, _Mapped(400, _INVALID, "invalid_value")),
    (LimitExceeded, _Mapped(400, _INVALID, "invalid_value")),
    (ModelNotFound, _Mapped(404, "not_found_error", "model_not_found")),
    (ResponseNotFound, _Mapped(404, "not_found_error", "response_not_found")),
    (ResponseStoreError, _Mapped(503, _UNAVAILABLE, "responses_unavailable")),
    (RequestTimeout, _Mapped(504, "timeout_error", "request_timeout")),
    (BodyTooLarge, _Mapped(413, _INVALID, "request_too_large")),
    (BodyTimeout, _Mapped(408, "timeout_error", "body_timeout")),
    (OutOfTime, _Mapped(504, "timeout_error", "budget_exhausted")),
    (Overloaded, _Mapped(503, _UNAVAILABLE, "overloaded")),
    (ShuttingDown, _Mapped(503, _UNAVAILABLE, "shutting_down")),
    (LimitStoreUnavailable, _Mapped(503, _UNAVAILABLE, "limits_unavailable")),
    (Unauthorized, _Mapped(401, _INVALID, "invalid_api_key")),
    (BackendTimeout, _Mapped(504, "timeout_error", "backend_timeout")),
    (BackendUnavailable, _Mapped(503, _UNAVAILABLE, "backend_unavailable")),
    (FeatureUnavailable, _Mapped(501, "not_implemented_error", "feature_unavailable")),
    (BackendError, _Mapped(502, "backend_error", "backend_error")),
    (VerifierError, _Mapped(502, "verifier_error", "verifier_error")),
)
# vLLM refused the request itself (a prompt over the context length, say).
_REJECTED = _Mapped(400, _INVALID, "backend_rejected")
_INTERNAL = _Mapped(500, "server_error", "internal_error")


def _map(exc: BaseException) -> _Mapped:
    if isinstance(exc, BackendResponseError) and exc.status_code == 400:
        return _REJECTED
    if isinstance(exc, KeyLimitExceeded):
        return _Mapped(429, exc.kind, exc.code)
    return next((mapped for kind, mapped in _TABLE if isinstance(exc, kind)), _INTERNAL)


def error_status(exc: BaseException) -> int:
    """The HTTP status an exception maps to."""
    return _map(exc).status


def error_response(exc: BaseException) -> tuple[int, ErrorResponse]:
    """The HTTP status and body for an exception raised while serving a request."""
    mapped = _map(exc)
    message, param = str(exc), (exc.param if isinstance(exc, GatewayError) else None)
    if mapped is _INTERNAL:
        logger.error("unhandled error", exc_info=exc)
        message, param = "The server had an internal error.", None
    info = ErrorInfo(message=message, type=mapped.type, param=param, code=mapped.code)
    return mapped.status, ErrorResponse(error=info)


def error_headers(exc: BaseException) -> dict[str, str]:
    """Headers an error response carries besides its body: when to retry, if the server says."""
    if isinstance(exc, ServerBusy):
        # A draining server will not take this connection's next request either.
        close = {"Connection": "close"} if isinstance(exc, ShuttingDown) else {}
        return {"Retry-After": str(exc.retry_after_s), **close}
    if isinstance(exc, KeyLimitExceeded):
        headers = {} if exc.retry_after_s is None else {"Retry-After": str(exc.retry_after_s)}
        if exc.retry_after_s is None or exc.code == "insufficient_quota":
            # The openai SDKs retry a 429 unless told not to; a ceiling or a spent budget
            # will not pass on a retry within the minute.
            headers["x-should-retry"] = "false"
        return headers
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    return {}


async def send_error(send: Send, exc: BaseException) -> None:
    """Answer with the error object of `exc` from a pure ASGI middleware."""
    status, body = error_response(exc)
    content = body.model_dump_json().encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in error_headers(exc).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def _json(status: int, body: ErrorResponse, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


async def _handle_error(request: Request, exc: Exception) -> JSONResponse:
    return _json(*error_response(exc), error_headers(exc))


async def _handle_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if not errors:
        info = ErrorInfo(message="invalid request", type=_INVALID, code="invalid_value")
        return _json(400, ErrorResponse(error=info))
    # A value that fits no member of a union fails once per member; the most specific of the
    # first field's errors says the most (a list's bad item rather than "not a string").
    field = _field_path(errors[0])
    same_field = [e for e in errors if _field_path(e)[: len(field)] == field]
    first = max(same_field, key=lambda e: len(_field_path(e)))
    param = ".".join(_field_path(first)) or None
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    info = ErrorInfo(message=message, type=_INVALID, param=param, code="invalid_value")
    return _json(400, ErrorResponse(error=info))


def _field_path(error: Any) -> tuple[str, ...]:
    """The request field an error is about, as the client names it: without pydantic's `body`
    prefix and the union members it tried (`str`, `list[str]`, a model's class name)."""
    return tuple(str(part) for part in error.get("loc", ()) if not _is_union_tag(part))


def _is_union_tag(part: object) -> bool:
    if not isinstance(part, str):
        return False  # a list index
    # Wire field names are snake_case and never a type's name.
    return part == "body" or part in _TYPE_NAMES or not part.islower() or "[" in part


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


async def _handle_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    kind = "not_found_error" if exc.status_code == 404 else _INVALID
    info = ErrorInfo(message=str(exc.detail), type=kind, code=str(exc.status_code))
    return _json(exc.status_code, ErrorResponse(error=info))


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception through the one table above.

    Our own errors are answered and done, like HTTP errors; anything else reaches the
    `Exception` handler, which Starlette runs in its outermost middleware and then re-raises
    so the server logs it.
    """
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(HTTPException, _handle_http)
    app.add_exception_handler(GatewayError, _handle_error)
    app.add_exception_handler(Exception, _handle_error)
