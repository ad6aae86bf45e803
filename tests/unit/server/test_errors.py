"""The one table from the server's errors to HTTP: status, OpenAI type, code and param."""

from __future__ import annotations

import pytest

from backends.errors import (
    BackendError,
    BackendResponseError,
    BackendTimeout,
    BackendUnavailable,
    FeatureUnavailable,
    GatewayError,
)
from server.errors import ModelNotFound, RequestTimeout, error_response
from server.protocol.errors import InvalidRequest
from strategies.base import InvalidParamsError, StrategyError, UnknownStrategyError
from strategies.limits import LimitExceeded
from verifiers.base import VerifierError

CASES: list[tuple[BaseException, int, str, str, str | None]] = [
    (UnknownStrategyError("x", ["cot"]), 400, "invalid_request_error", "unknown_strategy",
     "reasoning_strategy"),
    (InvalidParamsError("bad", "reasoning_params.n"), 400, "invalid_request_error",
     "invalid_reasoning_params", "reasoning_params.n"),
    (StrategyError("no"), 400, "invalid_request_error", "strategy_error", None),
    (InvalidRequest("no", "stop"), 400, "invalid_request_error", "invalid_value", "stop"),
    (LimitExceeded("n", 65, 64), 400, "invalid_request_error", "invalid_value", "n"),
    (ModelNotFound("a", ["b"]), 404, "not_found_error", "model_not_found", "model"),
    (RequestTimeout("late"), 504, "timeout_error", "request_timeout", None),
    (BackendTimeout("late"), 504, "timeout_error", "backend_timeout", None),
    (BackendUnavailable("down"), 503, "service_unavailable_error", "backend_unavailable", None),
    (BackendResponseError("too long", status_code=400), 400, "invalid_request_error",
     "backend_rejected", None),
    (BackendResponseError("bad body"), 502, "backend_error", "backend_error", None),
    (BackendError("failed"), 502, "backend_error", "backend_error", None),
    (FeatureUnavailable("needs xgrammar"), 501, "not_implemented_error", "feature_unavailable",
     None),
    (VerifierError("prm failed"), 502, "verifier_error", "verifier_error", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("exc", "status", "kind", "code", "param"), CASES, ids=lambda v: type(v).__name__
)
def test_each_error_maps_to_its_row(
    exc: BaseException, status: int, kind: str, code: str, param: str | None
) -> None:
    assert isinstance(exc, GatewayError)
    mapped, body = error_response(exc)
    assert (mapped, body.error.type, body.error.code, body.error.param) == (
        status,
        kind,
        code,
        param,
    )
    assert body.error.message == str(exc)


def test_anything_else_is_a_500_that_says_nothing_of_it() -> None:
    status, body = error_response(KeyError("internal detail"))
    assert (status, body.error.code) == (500, "internal_error")
    assert "internal detail" not in body.error.message


def test_limit_messages_name_the_field_and_the_ceiling() -> None:
    assert str(LimitExceeded("max_search_seconds", 600.0, 540.0)) == (
        "max_search_seconds is 600; this server allows at most 540"
    )
    assert str(LimitExceeded("max_tokens", 5000, 4096)) == (
        "max_tokens is 5000; this server allows at most 4096"
    )
