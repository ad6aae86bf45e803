"""`GET /health` (the process is alive) and `GET /ready` (the backend can answer)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

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
async def ready(serving: ServingDep, admission: AdmissionDep) -> dict[str, Any]:
    """Readiness: the backend is reachable and its model loaded, and the server is not shutting
    down (503 otherwise). Further models are probed too and reported; one that is down fails
    only its own requests."""
    if admission.is_shutting_down:
        raise ShuttingDown("The server is shutting down.")
    deployments = serving.deployments
    await deployments.backend.check_ready()
    named = await asyncio.gather(
        *(served.backend.check_ready() for served in deployments.named.values()),
        return_exceptions=True,
    )
    body: dict[str, Any] = {"status": "ready", "model": await deployments.backend.model_name()}
    if deployments.named:
        body["models"] = {
            name: "ready" if probe is None else f"unavailable: {probe}"
            for name, probe in zip(deployments.named, named, strict=True)
        }
    return body
