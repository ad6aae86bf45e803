"""Plain-model completions: echo, prompt scoring, token-id prompts and batches of prompts.

What evaluation harnesses send (lm-eval's `local-completions` posts token ids with `echo`,
`max_tokens` 1 and `logprobs`), answered by the backend itself, with no strategy: each prompt is
one `echo` call that scores its tokens and samples `n` completions after it; the choices come
prompt by prompt, `n` each, `index` in that order, as vLLM and OpenAI number them.
"""

from __future__ import annotations

import asyncio
import time

from backends.base import Completion, Echo, TextPrompt, TokenPrompt
from server.protocol.common import CompletionTokensDetails, UsageInfo
from server.protocol.completions import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
)
from server.serving.outcome import request_status, within_deadline
from server.serving.running import Serving

__all__ = ["complete_plain"]


async def complete_plain(
    serving: Serving,
    body: CompletionRequest,
    prompts: list[TextPrompt | TokenPrompt],
    request_id: str,
) -> CompletionResponse:
    """Answer a plain-model completion request; errors map to HTTP as any request's do."""
    started = time.perf_counter()
    status = "server_error"
    tokens = (0, 0)
    # A client's model name labels metrics only once it names a served model.
    model = "unknown"
    try:
        deployment = await serving.deployments.find(body.model)
        model = body.model
        params = body.plain_sampling(serving.limits)
        timeout = serving.limits.request_timeout_s
        loop = asyncio.get_running_loop()
        session = deployment.backend.session(request_id, loop.time() + timeout)
        echoes = await within_deadline(
            asyncio.gather(*(session.echo(p, params) for p in prompts)), timeout
        )
        choices = [
            _choice(i * params.n + j, echo, completion, body)
            for i, echo in enumerate(echoes)
            for j, completion in enumerate(echo.generation.completions)
        ]
        tokens = (
            sum(e.generation.prompt_tokens for e in echoes),
            sum(e.generation.completion_tokens for e in echoes),
        )
        status = "ok"
    except BaseException as exc:
        status = request_status(exc)
        raise
    finally:
        serving.metrics.plain(model, status, time.perf_counter() - started, *tokens)
    return CompletionResponse(
        id=request_id,
        created=int(time.time()),
        model=body.model,
        choices=choices,
        usage=UsageInfo(
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
            total_tokens=sum(tokens),
            completion_tokens_details=CompletionTokensDetails(),
        ),
    )


def _choice(
    index: int, echo: Echo, completion: Completion, body: CompletionRequest
) -> CompletionChoice:
    prefix = echo.text if body.echo else ""
    return CompletionChoice(
        index=index,
        text=prefix + completion.text,
        logprobs=_logprobs(echo, completion, body) if body.logprobs is not None else None,
        finish_reason=completion.finish_reason,
    )


def _logprobs(echo: Echo, completion: Completion, body: CompletionRequest) -> CompletionLogprobs:
    """OpenAI's legacy log-probabilities: the echoed prompt's tokens (the first with none),
    then the generated ones; offsets count characters of the choice's text."""
    tokens: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    if body.echo:
        for token in echo.tokens:
            tokens.append(token.token)
            values.append(token.logprob)
            tops.append(dict(token.top) if token.logprob is not None else None)
            offsets.append(token.offset)
    offset = len(echo.text) if body.echo else 0
    for generated in completion.logprobs or ():
        tokens.append(generated.token)
        values.append(generated.logprob)
        tops.append(dict(generated.top))
        offsets.append(offset)
        offset += len(generated.token)
    return CompletionLogprobs(
        tokens=tokens, token_logprobs=values, top_logprobs=tops, text_offset=offsets
    )
