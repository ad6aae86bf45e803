"""`POST /tokenize`, `POST /detokenize` and `GET /tokenizer_info`, as vLLM serves them, answered
by the served model's backend."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from backends.base import BackendSession
from server.deps import RequestIdDep, ServingDep
from server.protocol.tokenizer import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfoResponse,
)
from server.routes.answering import ERROR_RESPONSES
from server.serving.running import Serving

__all__ = ["detokenize", "router", "tokenize", "tokenizer_info"]

router = APIRouter(tags=["tokenizer"])


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERROR_RESPONSES)
async def tokenize(
    body: TokenizeRequest, serving: ServingDep, request_id: RequestIdDep
) -> TokenizeResponse:
    """The token ids of a prompt or of a conversation rendered with the chat template."""
    session = await _session(serving, body.model, f"tokenize-{request_id}")
    tokenized = await session.tokenize(
        body.to_prompt(), body.special_tokens(), body.return_token_strs
    )
    return TokenizeResponse(
        count=len(tokenized.ids),
        max_model_len=tokenized.max_model_len,
        tokens=list(tokenized.ids),
        token_strs=list(tokenized.strings) if tokenized.strings is not None else None,
    )


@router.post("/detokenize", response_model=DetokenizeResponse, responses=ERROR_RESPONSES)
async def detokenize(
    body: DetokenizeRequest, serving: ServingDep, request_id: RequestIdDep
) -> DetokenizeResponse:
    """The text of token ids."""
    session = await _session(serving, body.model, f"detokenize-{request_id}")
    return DetokenizeResponse(prompt=await session.detokenize(body.tokens))


@router.get("/tokenizer_info", response_model=TokenizerInfoResponse, responses=ERROR_RESPONSES)
async def tokenizer_info(serving: ServingDep, request_id: RequestIdDep) -> dict[str, Any]:
    """The served model's tokenizer configuration (special tokens, chat template)."""
    session = await _session(serving, None, f"tokenizer-{request_id}")
    return await session.tokenizer_info()


async def _session(serving: Serving, model: str | None, request_id: str) -> BackendSession:
    """A session on the backend of `model`, or of the backend's own model when none is named."""
    deployment = await serving.deployments.find(model) if model else serving.deployments.primary
    return deployment.backend.session(request_id)
