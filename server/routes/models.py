"""`GET /v1/models` and `GET /v1/models/{model}`."""

from __future__ import annotations

from fastapi import APIRouter

from server.deps import ServingDep
from server.errors import ModelNotFound
from server.protocol.models import ModelCard, ModelList
from server.routes.answering import ERROR_RESPONSES

__all__ = [
    "list_models",
    "retrieve_model",
    "router",
]

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES)
async def list_models(serving: ServingDep) -> ModelList:
    """The models this gateway serves."""
    return ModelList(data=[ModelCard(id=name) for name in await serving.deployments.by_name()])


# `:path`, since model names often hold a slash (`HuggingFaceTB/SmolLM2-135M-Instruct`).
@router.get("/v1/models/{model:path}", response_model=ModelCard, responses=ERROR_RESPONSES)
async def retrieve_model(model: str, serving: ServingDep) -> ModelCard:
    """One served model; a 404 naming the served models when `model` is not one of them."""
    served = await serving.deployments.by_name()
    if model not in served:
        raise ModelNotFound(model, list(served))
    return ModelCard(id=model)
