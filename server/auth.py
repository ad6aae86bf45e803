"""Who may call: `Authorization: Bearer <key>` on the API routes, and a token for `/metrics`.

With `--api-keys` set, every `/v1/*` route and the tokenizer routes need one of the keys; a
missing or unknown key is a 401 (`invalid_api_key`) before the request is read or queued. The
key found rides on the request's scope (`state["api_key"]`) to the routes, which check its
limits (server.quota). `/health`, `/ready` and the OpenAPI docs stay open. With
`--metrics-token` set, `/metrics` needs `Authorization: Bearer <token>`, as Prometheus sends it
with `authorization: {credentials: ...}`. Without either setting the middleware is not installed
at all, so an open server pays nothing.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import Unauthorized, send_error
from server.keys import KeyRing
from server.metrics import Metrics
from server.scopes import routed_path

__all__ = ["PROTECTED_PATHS", "AuthMiddleware", "bearer_token"]

# Routes outside /v1/ that need a key: vLLM's tokenizer routes.
PROTECTED_PATHS = frozenset({"/tokenize", "/detokenize", "/tokenizer_info"})
_METRICS_PATH = "/metrics"


def bearer_token(scope: Scope) -> str | None:
    """The token of the request's `Authorization: Bearer` header, if it has one."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class AuthMiddleware:
    """Pure ASGI: a 401 for API requests without a known key, and for `/metrics` without its
    token; everything else passes untouched."""

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyRing | None,
        metrics: Metrics,
        metrics_token: str | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.metrics = metrics
        self.metrics_token = metrics_token.encode() if metrics_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = routed_path(scope)
            if self.keys is not None and (path.startswith("/v1/") or path in PROTECTED_PATHS):
                token = bearer_token(scope)
                key = self.keys.find(token) if token else None
                if key is None:
                    self.metrics.unauthorized.inc()
                    await send_error(send, _unauthorized(token))
                    return
                scope.setdefault("state", {})["api_key"] = key
            elif path == _METRICS_PATH and self.metrics_token is not None:
                token = bearer_token(scope)
                if token is None or not hmac.compare_digest(token.encode(), self.metrics_token):
                    await send_error(send, _unauthorized(token))
                    return
        await self.app(scope, receive, send)


def _unauthorized(token: str | None) -> Unauthorized:
    # Never the key given, not even part of it: it may be someone's real key mistyped.
    if not token:
        return Unauthorized(
            "You didn't provide an API key. Send it in the Authorization header: "
            "`Authorization: Bearer <key>`."
        )
    return Unauthorized("Incorrect API key provided.")
