"""Builders shared by the tests."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx

from server.app import create_app
from server.backends.base import Backend, ChatMessage, ChatPrompt, SamplingParams
from server.settings import LimitsSettings, Settings
from strategies.base import StrategyRequest

SCRIPTED_MODEL = "scripted-model"


def chat_request(text: str = "What is 2 + 2?", **sampling: Any) -> StrategyRequest:
    """A one-turn chat request with the given sampling fields."""
    sampling.setdefault("max_tokens", 64)
    return StrategyRequest(ChatPrompt((ChatMessage("user", text),)), SamplingParams(**sampling))


def chat_body(content: str = "What is 2 + 2?", **fields: Any) -> dict[str, Any]:
    """A `/v1/chat/completions` body for the scripted model."""
    return {
        "model": SCRIPTED_MODEL,
        "messages": [{"role": "user", "content": content}],
        **fields,
    }


@contextlib.asynccontextmanager
async def app_client(
    backend: Backend, limits: LimitsSettings | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client wired straight to an app (lifespan included) around `backend`."""
    app = create_app(Settings(limits=limits or LimitsSettings()), backend=backend)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


def sse_events(body: str) -> list[Any]:
    """The `data:` payloads of a Server-Sent Events body, JSON-decoded except `[DONE]`."""
    events: list[Any] = []
    for line in body.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
