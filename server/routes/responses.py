"""`POST /v1/responses`, and the kept responses: `GET /v1/responses/{id}` (whole, or its events
from any number on) and `POST /v1/responses/{id}/cancel`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from backends.base import ChatPrompt
from server.deps import RequestIdDep, ServingDep
from server.keys import ApiKey
from server.protocol.responses.request import ResponsesRequest
from server.protocol.responses.response import ResponsesResponse
from server.quota import estimate
from server.routes.answering import ERROR_RESPONSES, SSE_HEADERS, admit, answer
from server.serving.background import BackgroundResponses
from server.serving.preparing import PreparedRequest
from server.serving.responses import ResponsesRendering
from server.serving.running import Serving

__all__ = [
    "cancel_response",
    "create_response",
    "get_response",
    "router",
]

router = APIRouter(tags=["responses"])


def _kept(request: Request) -> BackgroundResponses:
    kept: BackgroundResponses = request.app.state.responses
    return kept


def _owner(request: Request) -> str:
    """Whose responses a request sees: its key's (every request's, without keys)."""
    key: ApiKey | None = request.scope["state"].get("api_key")
    return key.alias if key is not None else ""


@router.post("/v1/responses", response_model=ResponsesResponse, responses=ERROR_RESPONSES)
async def create_response(
    body: ResponsesRequest, raw: Request, serving: ServingDep, request_id: RequestIdDep
) -> Response:
    """Answer `input` with the requested reasoning strategy, as the Responses API does; kept
    with `store`, run past the connection with `background`."""
    kept, owner = _kept(raw), _owner(raw)
    if body.previous_response_id is not None:
        body = body.following(await kept.history(body.previous_response_id, owner))
    prepared = await serving.prepare(body, f"resp_{request_id}")
    echo, max_output_tokens = body.echo(), prepared.request.sampling.max_tokens
    made: list[ResponsesRendering] = []

    def rendering(response_id: str, model: str, with_trace: bool) -> ResponsesRendering:
        made.append(ResponsesRendering(response_id, model, with_trace, echo, max_output_tokens))
        return made[-1]

    if body.background:
        return await _background(raw, serving, kept, body, prepared, rendering, owner)
    if not body.is_kept:
        return await answer(raw, serving, prepared, rendering, body.stream)

    async def keep() -> None:
        final = made[-1].final if made else None
        if final is not None:
            prompt = prepared.request.prompt
            assert isinstance(prompt, ChatPrompt)
            await kept.keep(prepared.request_id, owner, final, prompt)

    return await answer(raw, serving, prepared, rendering, body.stream, finished=keep)


async def _background(
    raw: Request,
    serving: Serving,
    kept: BackgroundResponses,
    body: ResponsesRequest,
    prepared: PreparedRequest,
    render_as: Callable[[str, str, bool], ResponsesRendering],
    owner: str,
) -> Response:
    """Start the run and answer at once with the queued response (or its events, streamed, as
    any replica would stream them). The key holds a place in flight until the run ends."""
    held = await admit(raw, prepared.model, lambda: estimate(prepared, serving.limits))

    async def settle() -> None:
        if held is not None:
            settling = held[0].settle(held[1], prepared.spent)
            if settling is not None:
                await settling

    rendering = render_as(prepared.request_id, prepared.model, prepared.with_trace)
    try:
        queued = await kept.start(prepared, rendering, owner, settle, keep_conversation=True)
    except BaseException:
        await settle()
        raise
    if body.stream:
        events = kept.events(prepared.request_id, owner, -1)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    return JSONResponse(queued)


@router.get(
    "/v1/responses/{response_id}", response_model=ResponsesResponse, responses=ERROR_RESPONSES
)
async def get_response(
    response_id: str,
    raw: Request,
    stream: bool = False,
    starting_after: int = Query(default=-1, ge=-1),
) -> Response:
    """A kept response as it stands; with `stream`, its events after `starting_after`, then
    each new one until it ends."""
    kept, owner = _kept(raw), _owner(raw)
    if not stream:
        record = await kept.get(response_id, owner)
        return JSONResponse(record.response)
    await kept.get(response_id, owner)  # a 404 before the stream starts
    events: AsyncIterator[str] = kept.events(response_id, owner, starting_after)
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


@router.post(
    "/v1/responses/{response_id}/cancel",
    response_model=ResponsesResponse,
    responses=ERROR_RESPONSES,
)
async def cancel_response(response_id: str, raw: Request) -> Response:
    """Cancel a background response (its run stops, its key is charged what it spent); a
    finished one is returned as it is."""
    record = await _kept(raw).cancel(response_id, _owner(raw))
    return JSONResponse(record.response)
