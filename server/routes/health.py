"""`GET /health` (the process is alive) and `GET /ready` (the backend can answer)."""

from __future__ import annotations

from fastapi import APIRouter

from server.deps import AdmissionDep, BackendDep
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
async def ready(backend: BackendDep, admission: AdmissionDep) -> dict[str, str]:
    """Readiness: the backend is reachable and its model loaded, and the server is not shutting
    down (503 otherwise)."""
    if admission.is_shutting_down:
        raise ShuttingDown("The server is shutting down.")
    await backend.check_ready()
    return {"status": "ready", "model": await backend.model_name()}
