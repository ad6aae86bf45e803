"""Request bodies are read whole, bounded in size and time, before anything else is spent on
them: a generation request takes its admission slot only once its body is in.

A body over `max_bytes` is a 413 (a declared `Content-Length` over it is refused before a byte
is read), one that has not arrived within `timeout_s` a 408; either way nothing downstream ran.
Without this, two sockets that sent headers and `{` and stalled held two slots for as long as
they stayed open, and a 64 MiB prompt was read into memory.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import BodyTimeout, BodyTooLarge, send_error

__all__ = ["BodyMiddleware"]

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class BodyMiddleware:
    """Pure ASGI: reads the body of a request that has one, then hands the app a `receive`
    that replays it (and after it, the client's disconnect)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await send_error(send, self._too_large())
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # gone before its body was in: nobody to answer
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        await send_error(send, self._too_large())
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await send_error(
                send, BodyTimeout(f"The request body did not arrive within {self.timeout_s:g} s.")
            )
            return
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(f"The request body is larger than {self.max_bytes} bytes.")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() and len(value) < 20 else None
    return None
