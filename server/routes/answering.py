"""What the generation routes share: error bodies for OpenAPI and the two ways to answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from server.protocol.errors import ErrorResponse
from server.serving.core import PreparedRequest, Serving, run_until_disconnected
from server.serving.rendering import Rendering

__all__ = ["ERROR_RESPONSES", "answer"]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 404, 500, 502, 503, 504)
}

# Proxies must pass events on as they come rather than buffer the stream.
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def answer(
    request: Request,
    serving: Serving,
    prepared: PreparedRequest,
    render_as: Callable[[str, str, bool], Rendering],
    stream: bool,
) -> Response:
    """Stream Server-Sent Events, or run to the end and return one JSON body; `render_as` makes
    the endpoint's rendering from the response's id, the model and whether to show the trace."""
    rendering = render_as(prepared.request_id, prepared.model, prepared.with_trace)
    if stream:
        events = serving.stream(prepared, rendering)
        return StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS)
    result = await run_until_disconnected(request.receive, serving.complete(prepared))
    if result is None:
        # nginx's code for "client closed request": only logs will ever see it.
        return Response(status_code=499)
    return JSONResponse(rendering.body(result))
