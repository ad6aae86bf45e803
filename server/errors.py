"""Every error leaves the server as OpenAI's error object; the one table that maps them is here.

The errors the server raises on purpose share one root, `GatewayError`; each layer defines its
own branch, and this is the whole tree with the HTTP status each maps to::

    GatewayError                     backends.errors
    ├── InvalidRequest          400  server.protocol.errors: a field asks for what we can't do
    ├── ModelNotFound           404  the request names a model this server does not serve
    ├── RequestTimeout          504  the whole request ran past the server's deadline
    ├── LimitExceeded           400  strategies.limits: a field is over the server's ceiling
    ├── StrategyError           400  strategies.base
    │   ├── UnknownStrategyError     `reasoning_strategy` names no registered strategy
    │   └── InvalidParamsError       `reasoning_params` does not validate
    ├── VerifierError           502  verifiers.base: a verifier failed or timed out
    └── BackendError            502  backends.errors: a model server call failed
        ├── BackendUnavailable  503  no replica reachable, or the embedded queue is full
        ├── BackendTimeout      504  a call ran past its timeout
        └── BackendResponseError     an error status or a malformed body (400 when the model
                                     server refused the request itself)

Anything else is a 500 with a generic message; the traceback goes to the log, not the client.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from backends.errors import (
    BackendError,
    BackendResponseError,
    BackendTimeout,
    BackendUnavailable,
    GatewayError,
)
from server.protocol.errors import ErrorInfo, ErrorResponse, InvalidRequest
from strategies.base import InvalidParamsError, StrategyError, UnknownStrategyError
from strategies.limits import LimitExceeded
from verifiers.base import VerifierError

__all__ = [
    "ModelNotFound",
    "RequestTimeout",
    "error_response",
    "error_status",
    "install_error_handlers",
]

logger = logging.getLogger(__name__)


class ModelNotFound(GatewayError, LookupError):
    """The request names a model this server does not serve."""

    param = "model"

    def __init__(self, model: str, served: Sequence[str]) -> None:
        names = ", ".join(repr(name) for name in served)
        super().__init__(f"The model {model!r} does not exist; this server serves {names}.")


class RequestTimeout(GatewayError, TimeoutError):
    """The whole request ran past the server's deadline."""


@dataclass(frozen=True)
class _Mapped:
    status: int
    type: str
    code: str


_INVALID = "invalid_request_error"

# Most specific first: an error takes the row of the first class it is an instance of.
_TABLE: tuple[tuple[type[GatewayError], _Mapped], ...] = (
    (UnknownStrategyError, _Mapped(400, _INVALID, "unknown_strategy")),
    (InvalidParamsError, _Mapped(400, _INVALID, "invalid_reasoning_params")),
    (StrategyError, _Mapped(400, _INVALID, "strategy_error")),
    (InvalidRequest, _Mapped(400, _INVALID, "invalid_value")),
    (LimitExceeded, _Mapped(400, _INVALID, "invalid_value")),
    (ModelNotFound, _Mapped(404, "not_found_error", "model_not_found")),
    (RequestTimeout, _Mapped(504, "timeout_error", "request_timeout")),
    (BackendTimeout, _Mapped(504, "timeout_error", "backend_timeout")),
    (BackendUnavailable, _Mapped(503, "service_unavailable_error", "backend_unavailable")),
    (BackendError, _Mapped(502, "backend_error", "backend_error")),
    (VerifierError, _Mapped(502, "verifier_error", "verifier_error")),
)
# vLLM refused the request itself (a prompt over the context length, say).
_REJECTED = _Mapped(400, _INVALID, "backend_rejected")
_INTERNAL = _Mapped(500, "server_error", "internal_error")


def _map(exc: BaseException) -> _Mapped:
    if isinstance(exc, BackendResponseError) and exc.status_code == 400:
        return _REJECTED
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


def _json(status: int, body: ErrorResponse) -> JSONResponse:
    return JSONResponse(body.model_dump(), status_code=status)


async def _handle_error(request: Request, exc: Exception) -> JSONResponse:
    return _json(*error_response(exc))


async def _handle_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    info = ErrorInfo(message=message, type=_INVALID, param=param, code="invalid_value")
    return _json(400, ErrorResponse(error=info))


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
