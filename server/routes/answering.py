"""What the generation routes share: error bodies for OpenAPI, a key's limits, the two ways to
answer (a stream, or one JSON body charged to the key however the run ends), and what a client
that goes away before its answer gets (499)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.types import Receive

from server.keys import ApiKey
from server.protocol.errors import ErrorResponse
from server.quota import Claim, Estimate, Quotas, estimate
from server.serving.preparing import PreparedRequest
from server.serving.rendering import Rendering
from server.serving.running import Serving
from strategies.accounting import Usage

__all__ = [
    "ERROR_RESPONSES",
    "SSE_HEADERS",
    "admit",
    "answer",
    "answer_whole",
    "run_until_disconnected",
]

_T = TypeVar("_T")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 429, 500, 502, 503, 504)
}

# Proxies must pass events on as they come rather than buffer the stream.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def admit(
    request: Request, model: str, need: Callable[[], Estimate]
) -> tuple[Quotas, Claim] | None:
    """Hold the request's key to its limits (429 when over them) for what `need` says it may
    spend, or None when the server has no keys. Its place in flight is keyed on an id of the
    server's: a client's `X-Request-Id` (kept for logs and routing) could be shared by many
    requests, which then held one place between them."""
    quotas: Quotas | None = request.app.state.quotas
    if quotas is None:
        return None
    key: ApiKey | None = request.scope["state"].get("api_key")
    if key is None:
        return None
    return quotas, await quotas.admit(key, model, uuid.uuid4().hex, need())


async def answer(
    request: Request,
    serving: Serving,
    prepared: PreparedRequest,
    render_as: Callable[[str, str, bool], Rendering],
    stream: bool,
    finished: Callable[[], Awaitable[None]] | None = None,
) -> Response:
    """Stream Server-Sent Events, or run to the end and return one JSON body; `render_as` makes
    the endpoint's rendering from the response's id, the model and whether to show the trace; a
    key is charged what the run spent, however it ends. `finished` is awaited once the answer
    is whole (before the body's end, for a stream), however the run ended."""

    def need() -> Estimate:
        return estimate(prepared, serving.limits)

    if not stream:
        rendering = render_as(prepared.request_id, prepared.model, prepared.with_trace)
        whole = await answer_whole(
            request,
            prepared.model,
            need,
            lambda: serving.complete(prepared),
            lambda _: prepared.spent,
            rendering.body,
        )
        if finished is not None and whole.status_code == 200:
            await finished()
        return whole
    held = await admit(request, prepared.model, need)
    rendering = render_as(prepared.request_id, prepared.model, prepared.with_trace)
    events: AsyncIterator[str] = serving.stream(prepared, rendering)
    after = None
    if finished is not None:
        events = _then(events, finished)
    if held is not None:
        events = _settling(events, *held, prepared)
        # Should the body never start (the client gone first), settle after the response.
        after = BackgroundTask(_settle_later, *held, prepared)
    return StreamingResponse(
        events, media_type="text/event-stream", headers=SSE_HEADERS, background=after
    )


async def answer_whole(
    request: Request,
    model: str,
    need: Callable[[], Estimate],
    run: Callable[[], Awaitable[_T]],
    spent: Callable[[_T | None], Usage | None],
    body: Callable[[_T], dict[str, Any]],
) -> Response:
    """Admit the request's key for what `need` says (429 when over its limits), `run` it until
    the client goes (then 499), charge the key what `spent` says of the result (None: it
    failed), and answer `body` of the result as JSON."""
    held = await admit(request, model, need)
    result, settling = None, None
    try:
        result = await run_until_disconnected(request.receive, run())
    finally:
        if held is not None:
            settling = held[0].settle(held[1], spent(result))
    if settling is not None:
        # Before answering, so that the client's next request finds it charged.
        await settling
    if result is None:
        # nginx's code for "client closed request": only logs will ever see it.
        return Response(status_code=499)
    return JSONResponse(body(result))


async def _then(
    events: AsyncIterator[str], finished: Callable[[], Awaitable[None]]
) -> AsyncIterator[str]:
    """`events`, then `finished` awaited before the body ends."""
    async for event in events:
        yield event
    await finished()


async def _settle_later(quotas: Quotas, claim: Claim, prepared: PreparedRequest) -> None:
    await prepared.run.unwound()
    settling = quotas.settle(claim, prepared.spent)  # a no-op once the stream settled it
    if settling is not None:
        await settling


async def _settling(
    events: AsyncIterator[str], quotas: Quotas, claim: Claim, prepared: PreparedRequest
) -> AsyncIterator[str]:
    try:
        async for event in events:
            yield event
    except BaseException:
        # The client went away: the cancelled strategy may still be unwinding its calls in
        # flight, which are counted as they end; settle once it has (in the background, as
        # this task is being cancelled).
        quotas.settle_after(claim, prepared.spent, prepared.run.unwound())
        raise
    settling = quotas.settle(claim, prepared.spent)
    if settling is not None:
        # Before the body ends, so that the client's next request finds it charged.
        await settling


async def run_until_disconnected(receive: Receive, work: Awaitable[_T]) -> _T | None:
    """Await `work`; if the client disconnects first (the body is already read), cancel it and
    return None."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        # The client is gone: let the cancellation finish, and answer nobody.
        await asyncio.gather(task, return_exceptions=True)
        return None
    return task.result()
