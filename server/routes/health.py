"""`GET /health` (the process is alive) and `GET /ready` (the backend can answer)."""

from __future__ import annotations

import asyncio
import hmac
import re
from typing import Any

from fastapi import APIRouter, Request
from pydantic import SecretStr

from backends.errors import BackendUnavailable
from server.auth import bearer_token
from server.deps import AdmissionDep, ServingDep
from server.errors import ShuttingDown
from server.routes.answering import ERROR_RESPONSES

__all__ = [
    "health",
    "ready",
    "router",
]

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: answers as long as the event loop runs."""
    return {"status": "ok"}


@router.get("/ready", responses=ERROR_RESPONSES)
async def ready(request: Request, serving: ServingDep, admission: AdmissionDep) -> dict[str, Any]:
    """Readiness: the backend is reachable and its model loaded, and the server is not shutting
    down (503 otherwise). Further models are probed too and reported; one that is down fails
    only its own requests. The route is open, so which replica is down is said by its place
    ("replica 2"), and its URL only to a caller with the metrics token."""
    if admission.is_shutting_down:
        raise ShuttingDown("The server is shutting down.")
    shown = _url_shown if _is_operator(request) else _url_hidden
    deployments = serving.deployments
    try:
        await deployments.backend.check_ready()
    except BackendUnavailable as exc:
        raise BackendUnavailable(shown(str(exc))) from exc
    named = await asyncio.gather(
        *(served.backend.check_ready() for served in deployments.named.values()),
        return_exceptions=True,
    )
    body: dict[str, Any] = {"status": "ready", "model": await deployments.backend.model_name()}
    if deployments.named:
        body["models"] = {
            name: "ready" if probe is None else f"unavailable: {shown(str(probe))}"
            for name, probe in zip(deployments.named, named, strict=True)
        }
    return body


# A URL, without the colon that may follow it in a message ("http://h:8000: refused").
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s;,]*[^\s;,:]", re.IGNORECASE)


def _is_operator(request: Request) -> bool:
    """Whether the caller presented the metrics token (the operator's)."""
    token: SecretStr | None = request.app.state.settings.metrics_token
    given = bearer_token(request.scope)
    return (
        token is not None
        and given is not None
        and hmac.compare_digest(given.encode(), token.get_secret_value().encode())
    )


def _url_shown(message: str) -> str:
    return message


def _url_hidden(message: str) -> str:
    """`message` with each URL replaced by its place among the URLs it names."""
    places: dict[str, int] = {}

    def place(match: re.Match[str]) -> str:
        return f"replica {places.setdefault(match.group(0), len(places) + 1)}"

    return _URL.sub(place, message)
