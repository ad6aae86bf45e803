"""`POST /v1/completions`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from server.deps import RequestIdDep, ServingDep
from server.protocol.completions import CompletionRequest, CompletionResponse
from server.routes.answering import ERROR_RESPONSES, answer
from server.serving.completions import CompletionRendering
from server.serving.core import run_until_disconnected
from server.serving.plain import complete_plain

__all__ = [
    "create_completion",
    "router",
]

router = APIRouter(tags=["completions"])


@router.post("/v1/completions", response_model=CompletionResponse, responses=ERROR_RESPONSES)
async def create_completion(
    body: CompletionRequest, raw: Request, serving: ServingDep, request_id: RequestIdDep
) -> Response:
    """Continue a raw prompt with the requested reasoning strategy; echo, prompt scoring,
    token-id prompts and batches of prompts go to the model itself."""
    prompts = body.plain_prompts()
    if prompts is not None:
        work = complete_plain(serving, body, prompts, f"cmpl-{request_id}")
        response = await run_until_disconnected(raw.receive, work)
        if response is None:
            return Response(status_code=499)
        return JSONResponse(response.model_dump(exclude_none=True))
    prepared = await serving.prepare(body, f"cmpl-{request_id}")
    return await answer(raw, serving, prepared, CompletionRendering, body.stream)
