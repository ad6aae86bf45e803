"""`POST /v1/chat/completions`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.deps import RequestIdDep, ServingDep
from server.protocol.chat import ChatCompletionRequest, ChatCompletionResponse
from server.routes.answering import ERROR_RESPONSES, answer
from server.serving.chat import ChatRendering

__all__ = [
    "create_chat_completion",
    "router",
]

router = APIRouter(tags=["chat"])


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses=ERROR_RESPONSES,
)
async def create_chat_completion(
    body: ChatCompletionRequest, raw: Request, serving: ServingDep, request_id: RequestIdDep
) -> Response:
    """Answer a conversation with the requested reasoning strategy."""
    prepared = await serving.prepare(body, f"chatcmpl-{request_id}")

    def rendering(response_id: str, model: str, with_trace: bool) -> ChatRendering:
        return ChatRendering(response_id, model, with_trace, body.include_reasoning)

    return await answer(raw, serving, prepared, rendering, body.stream)
