"""`POST /v1/responses`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.deps import RequestIdDep, ServingDep
from server.protocol.responses.request import ResponsesRequest
from server.protocol.responses.response import ResponsesResponse
from server.routes.answering import ERROR_RESPONSES, answer
from server.serving.responses import ResponsesRendering

__all__ = [
    "create_response",
    "router",
]

router = APIRouter(tags=["responses"])


@router.post("/v1/responses", response_model=ResponsesResponse, responses=ERROR_RESPONSES)
async def create_response(
    body: ResponsesRequest, raw: Request, serving: ServingDep, request_id: RequestIdDep
) -> Response:
    """Answer `input` with the requested reasoning strategy, as the Responses API does."""
    prepared = await serving.prepare(body, f"resp_{request_id}")
    echo, max_output_tokens = body.echo(), prepared.request.sampling.max_tokens

    def rendering(response_id: str, model: str, with_trace: bool) -> ResponsesRendering:
        return ResponsesRendering(response_id, model, with_trace, echo, max_output_tokens)

    return await answer(raw, serving, prepared, rendering, body.stream)
