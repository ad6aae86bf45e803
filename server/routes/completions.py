"""`POST /v1/completions`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from backends.base import TextPrompt, TokenPrompt
from server.deps import RequestIdDep, ServingDep
from server.protocol.completions import CompletionRequest, CompletionResponse
from server.protocol.errors import InvalidRequest
from server.quota import Estimate
from server.routes.answering import ERROR_RESPONSES, answer, answer_whole
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
        most = raw.app.state.settings.limits.max_batch_prompts
        if len(prompts) > most:
            # Each prompt is a backend call of its own.
            raise InvalidRequest(
                f"a batch holds {len(prompts)} prompts; this server takes at most {most}",
                "prompt",
            )
        return await answer_whole(
            raw,
            body.model,
            lambda: _plain_need(body, prompts),
            lambda: complete_plain(serving, body, prompts, f"cmpl-{request_id}"),
            _plain_spent,
            lambda response: response.model_dump(exclude_none=True),
        )
    prepared = await serving.prepare(body, f"cmpl-{request_id}")
    return await answer(raw, serving, prepared, CompletionRendering, body.stream)


def _plain_need(body: CompletionRequest, prompts: list[TextPrompt | TokenPrompt]) -> Estimate:
    """What a plain-model request may spend: `n` completions of `max_tokens` per prompt, and at
    least a token per prompt, so that a key's tokens per minute bound its backend calls (an
    echo batch scoring prompts generates none)."""
    chars = sum(len(p.text) if isinstance(p, TextPrompt) else 3 * len(p.ids) for p in prompts)
    per_prompt = body.n * (body.max_tokens if body.max_tokens is not None else 16)
    return Estimate(
        strategy="none",
        n=body.n,
        n_param="n",
        budget_tokens=None,
        tokens=len(prompts) * max(1, per_prompt),
        prompt_tokens=chars // 3 + 1,
    )


def _plain_spent(response: CompletionResponse | None) -> Usage | None:
    """What a plain-model request spent; one that failed has no usage, and is charged its
    reservation."""
    if response is None or response.usage is None:
        return None
    return Usage(response.usage.prompt_tokens, response.usage.completion_tokens)
