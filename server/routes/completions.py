"""`POST /v1/completions`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.deps import RequestIdDep, ServingDep
from server.protocol import CompletionChunks, CompletionRequest, CompletionResponse
from server.routes.responses import ERROR_RESPONSES, answer

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
    run = await serving.prepare(body, f"cmpl-{request_id}")
    return await answer(raw, serving, run, CompletionResponse.build, CompletionChunks, body.stream)
