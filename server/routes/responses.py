"""What the generation routes share: error bodies for OpenAPI and the two ways to answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from server.protocol import ErrorResponse
from server.serving import ChunkBuilder, PreparedRun, Serving, run_until_disconnected
from strategies.base import StrategyResult

__all__ = ["ERROR_RESPONSES", "answer"]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 404, 500, 502, 503, 504)
}

# Proxies must pass events on as they come rather than buffer the stream.
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

ResponseBuilder = Callable[[StrategyResult, str, str, bool], BaseModel]


async def answer(
    request: Request,
    serving: Serving,
    run: PreparedRun,
    build: ResponseBuilder,
    chunks: Callable[[str, str], ChunkBuilder],
    stream: bool,
) -> Response:
    """Stream Server-Sent Events, or run to the end and return one JSON body."""
    if stream:
        events: AsyncIterator[str] = serving.stream(run, chunks(run.request_id, run.model))
        return StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS)
    result = await run_until_disconnected(request, serving.complete(run))
    if result is None:
        # nginx's code for "client closed request": only logs will ever see it.
        return Response(status_code=499)
    body = build(result, run.model, run.request_id, run.with_trace).model_dump()
    for extension in ("reasoning_trace", "reasoning_fallback", "reasoning_stopped_early"):
        if body.get(extension) is None:
            body.pop(extension, None)
    return JSONResponse(body)
