"""`POST /tokenize`, `POST /detokenize` and `GET /tokenizer_info`, as vLLM serves them, answered
by the served model's backend."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from backends.base import BackendSession
from server.deps import RequestIdDep, ServingDep
from server.protocol.tokenizer import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfoResponse,
)
from server.quota import Estimate
from server.routes.answering import ERROR_RESPONSES, answer_whole
from server.serving.running import Serving
from strategies.accounting import Usage

__all__ = ["detokenize", "router", "tokenize", "tokenizer_info"]

router = APIRouter(tags=["tokenizer"])


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERROR_RESPONSES)
async def tokenize(
    body: TokenizeRequest, raw: Request, serving: ServingDep, request_id: RequestIdDep
) -> Response:
    """The token ids of a prompt or of a conversation rendered with the chat template."""

    async def run() -> dict[str, Any]:
        session = await _session(serving, body.model, f"tokenize-{request_id}")
        tokenized = await session.tokenize(
            body.to_prompt(), body.special_tokens(), body.return_token_strs
        )
        return TokenizeResponse(
            count=len(tokenized.ids),
            max_model_len=tokenized.max_model_len,
            tokens=list(tokenized.ids),
            token_strs=list(tokenized.strings) if tokenized.strings is not None else None,
        ).model_dump()

    return await _under_key(raw, body.model, run)


@router.post("/detokenize", response_model=DetokenizeResponse, responses=ERROR_RESPONSES)
async def detokenize(
    body: DetokenizeRequest, raw: Request, serving: ServingDep, request_id: RequestIdDep
) -> Response:
    """The text of token ids."""

    async def run() -> dict[str, Any]:
        session = await _session(serving, body.model, f"detokenize-{request_id}")
        return DetokenizeResponse(prompt=await session.detokenize(body.tokens)).model_dump()

    return await _under_key(raw, body.model, run)


@router.get("/tokenizer_info", response_model=TokenizerInfoResponse, responses=ERROR_RESPONSES)
async def tokenizer_info(raw: Request, serving: ServingDep, request_id: RequestIdDep) -> Response:
    """The served model's tokenizer configuration (special tokens, chat template)."""

    async def run() -> dict[str, Any]:
        session = await _session(serving, None, f"tokenizer-{request_id}")
        return await session.tokenizer_info()

    return await _under_key(raw, None, run)


async def _under_key(
    raw: Request, model: str | None, run: Callable[[], Awaitable[dict[str, Any]]]
) -> Response:
    """Answer `run` under the key's limits, as every route that reaches a backend is: a
    request counts against its rate and places in flight, and spends no tokens."""
    return await answer_whole(
        raw, model or "", _tokenizer_need, run, lambda _: Usage(), lambda body: body
    )


def _tokenizer_need() -> Estimate:
    """A tokenizer call: no strategy, no tokens generated."""
    return Estimate(strategy=None, n=1, n_param="n", budget_tokens=None, tokens=0, prompt_tokens=0)


async def _session(serving: Serving, model: str | None, request_id: str) -> BackendSession:
    """A session on the backend of `model`, or of the backend's own model when none is named."""
    deployment = await serving.deployments.find(model) if model else serving.deployments.primary
    return deployment.backend.session(request_id)
