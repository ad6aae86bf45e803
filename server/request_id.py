"""Every request gets an id: the client's `X-Request-Id` when it sends a sane one, else a new one.

The id is echoed in the response header, forwarded to vLLM, and added to every log line
written while the request is served. Every request also gets a routing key of the server's own
(`backends.routing`), never the client's id, which routers in front of vLLM hash.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backends.routing import new_routing_key, routing_key_set

__all__ = ["RequestIdFilter", "RequestIdMiddleware", "current_request_id"]

# Set once per request by the middleware; log lines read it instead of being handed the id.
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def current_request_id() -> str | None:
    """The id of the request being served here, or None outside a request."""
    return _current.get()


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to log records so formats can print it (`-` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _current.get() or "-"
        return True


class RequestIdMiddleware:
    """Pure ASGI (no per-request task), so it costs nothing on the streaming path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SANE.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = _current.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            with routing_key_set(new_routing_key()):
                await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
