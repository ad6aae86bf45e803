"""`POST /v1/completions`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.deps import RequestIdDep, ServingDep
from server.protocol.completions import CompletionRequest, CompletionResponse
from server.routes.answering import ERROR_RESPONSES, answer
from server.serving.completions import CompletionRendering

__all__ = [
    "create_completion",
    "router",
]

router = APIRouter(tags=["completions"])


@router.post("/v1/completions", response_model=CompletionResponse, responses=ERROR_RESPONSES)
async def create_completion(
    body: CompletionRequest, raw: Request, serving: ServingDep, request_id: RequestIdDep
) -> Response:
    """Continue a raw prompt with the requested reasoning strategy."""
    prepared = await serving.prepare(body, f"cmpl-{request_id}")
    return await answer(raw, serving, prepared, CompletionRendering, body.stream)
