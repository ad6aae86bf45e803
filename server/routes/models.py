"""`GET /v1/models`."""

from __future__ import annotations

from fastapi import APIRouter

from server.deps import ServingDep
from server.protocol.models import ModelCard, ModelList
from server.routes.answering import ERROR_RESPONSES

__all__ = [
    "list_models",
    "router",
]

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES)
async def list_models(serving: ServingDep) -> ModelList:
    """The models this gateway serves."""
    return ModelList(data=[ModelCard(id=name) for name in await serving.models()])
