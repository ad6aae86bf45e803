"""Every error leaves the server as OpenAI's error object; the one table that maps them is here.

Bad input is a 400 naming the field, an unknown model a 404, an unreachable backend a 503,
a backend or request timeout a 504, any other backend or verifier failure a 502, and anything
unexpected a 500 with a generic message (the traceback goes to the log, not to the client).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from server.backends.base import (
    BackendError,
    BackendResponseError,
    BackendTimeout,
    BackendUnavailable,
)
from server.protocol import ErrorInfo, ErrorResponse, InvalidRequest
from strategies.base import InvalidParamsError, StrategyError, UnknownStrategyError
from verifiers.base import VerifierError

__all__ = [
    "ModelNotFound",
    "RequestTimeout",
    "error_response",
    "error_status",
    "install_error_handlers",
]

logger = logging.getLogger(__name__)


class ModelNotFound(LookupError):
    """The request names a model this server does not serve."""

    def __init__(self, model: str, served: str) -> None:
        super().__init__(f"The model {model!r} does not exist; this server serves {served!r}.")


class RequestTimeout(TimeoutError):
    """The whole request ran past the server's deadline."""


@dataclass(frozen=True)
class _Mapped:
    status: int
    type: str
    code: str
    message: str
    param: str | None = None


def _map(exc: BaseException) -> _Mapped:
    match exc:
        case UnknownStrategyError():
            return _Mapped(
                400, "invalid_request_error", "unknown_strategy", str(exc), "reasoning_strategy"
            )
        case InvalidParamsError():
            return _Mapped(
                400, "invalid_request_error", "invalid_reasoning_params", str(exc), exc.param
            )
        case InvalidRequest():
            return _Mapped(400, "invalid_request_error", "invalid_value", str(exc), exc.param)
        case StrategyError():
            return _Mapped(400, "invalid_request_error", "strategy_error", str(exc))
        case ModelNotFound():
            return _Mapped(404, "not_found_error", "model_not_found", str(exc), "model")
        case BackendTimeout():
            return _Mapped(504, "timeout_error", "backend_timeout", str(exc))
        case RequestTimeout():
            return _Mapped(504, "timeout_error", "request_timeout", str(exc))
        case BackendUnavailable():
            return _Mapped(503, "service_unavailable_error", "backend_unavailable", str(exc))
        case BackendResponseError() if exc.status_code == 400:
            # vLLM refused the request itself (a prompt over the context length, say).
            return _Mapped(400, "invalid_request_error", "backend_rejected", str(exc))
        case BackendError():
            return _Mapped(502, "backend_error", "backend_error", str(exc))
        case VerifierError():
            return _Mapped(502, "verifier_error", "verifier_error", str(exc))
        case _:
            return _Mapped(
                500, "server_error", "internal_error", "The server had an internal error."
            )


def error_status(exc: BaseException) -> int:
    """The HTTP status an exception maps to."""
    return _map(exc).status


def error_response(exc: BaseException) -> tuple[int, ErrorResponse]:
    """The HTTP status and body for an exception raised while serving a request."""
    mapped = _map(exc)
    if mapped.status == 500:
        logger.error("unhandled error", exc_info=exc)
    info = ErrorInfo(message=mapped.message, type=mapped.type, param=mapped.param, code=mapped.code)
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
    info = ErrorInfo(
        message=message, type="invalid_request_error", param=param, code="invalid_value"
    )
    return _json(400, ErrorResponse(error=info))


async def _handle_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    info = ErrorInfo(message=str(exc.detail), type=kind, code=str(exc.status_code))
    return _json(exc.status_code, ErrorResponse(error=info))


# Handled like HTTP errors: answered and done. Anything else reaches the `Exception` handler,
# which Starlette runs in its outermost middleware and then re-raises so the server logs it.
_EXPECTED = (
    InvalidRequest,
    StrategyError,
    ModelNotFound,
    RequestTimeout,
    BackendError,
    VerifierError,
)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception through the one table above."""
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(HTTPException, _handle_http)
    for kind in _EXPECTED:
        app.add_exception_handler(kind, _handle_error)
    app.add_exception_handler(Exception, _handle_error)
