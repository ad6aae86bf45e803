"""`POST /v1/completions`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from backends.base import TextPrompt, TokenPrompt
from server.deps import RequestIdDep, ServingDep
from server.protocol.completions import CompletionRequest, CompletionResponse
from server.quota import Estimate
from server.routes.answering import ERROR_RESPONSES, admit, answer, run_until_disconnected
from server.serving.completions import CompletionRendering
from server.serving.plain import complete_plain
from strategies.accounting import Usage

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
        held = None
        if raw.app.state.quotas is not None:
            held = await admit(raw, body.model, f"cmpl-{request_id}", _plain_need(body, prompts))
        work = complete_plain(serving, body, prompts, f"cmpl-{request_id}")
        response, settling = None, None
        try:
            response = await run_until_disconnected(raw.receive, work)
        finally:
            if held is not None:
                # A plain request that fails is charged its reservation: it has no usage.
                spent = response.usage if response is not None else None
                usage = None
                if spent is not None:
                    usage = Usage(spent.prompt_tokens, spent.completion_tokens)
                settling = held[0].settle(held[1], usage)
        if settling is not None:
            await settling
        if response is None:
            return Response(status_code=499)
        return JSONResponse(response.model_dump(exclude_none=True))
    prepared = await serving.prepare(body, f"cmpl-{request_id}")
    return await answer(raw, serving, prepared, CompletionRendering, body.stream)


def _plain_need(body: CompletionRequest, prompts: list[TextPrompt | TokenPrompt]) -> Estimate:
    """What a plain-model request may spend: `n` completions of `max_tokens` per prompt."""
    chars = sum(len(p.text) if isinstance(p, TextPrompt) else 3 * len(p.ids) for p in prompts)
    return Estimate(
        strategy="none",
        n=body.n,
        n_param="n",
        budget_tokens=None,
        tokens=len(prompts) * body.n * (body.max_tokens if body.max_tokens is not None else 16),
        prompt_tokens=chars // 3 + 1,
    )
