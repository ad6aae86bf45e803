"""The request id and the routing key every request gets (`server/request_id.py`)."""

from __future__ import annotations

import asyncio
import re

from starlette.types import Message, Receive, Scope, Send

from backends.routing import current_routing_key
from server.request_id import RequestIdMiddleware, current_request_id


async def serve(request_id: str | None) -> tuple[str | None, set[str | None], str]:
    """One request through `RequestIdMiddleware`, with `request_id` as its X-Request-Id: the
    request id seen inside, the routing keys seen inside (in the handler and in two tasks it
    starts, as a strategy's fan-out does) and the X-Request-Id of the response."""
    seen: dict[str, object] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["id"] = current_request_id()
        tasks = [asyncio.create_task(asyncio.sleep(0, current_routing_key())) for _ in range(2)]
        seen["keys"] = {current_routing_key(), *await asyncio.gather(*tasks)}
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [] if request_id is None else [(b"x-request-id", request_id.encode())]
    await RequestIdMiddleware(app)({"type": "http", "headers": headers}, receive, send)
    echoed = dict(sent[0]["headers"])[b"x-request-id"].decode()
    request, keys = seen["id"], seen["keys"]
    assert isinstance(request, str) and isinstance(keys, set)
    return request, keys, echoed


async def test_the_client_id_stays_the_request_id_but_never_the_routing_key() -> None:
    first = await serve("client-7")
    second = await serve("client-7")
    for request, keys, echoed in (first, second):
        assert request == echoed == "client-7"
        (key,) = keys
        assert key is not None and re.fullmatch(r"[0-9a-f]{32}", key)
    # Two requests reusing one id still spread: each has a key of its own.
    assert first[1] != second[1]


async def test_a_request_without_an_id_gets_both_and_they_differ() -> None:
    request, keys, echoed = await serve(None)
    (key,) = keys
    assert request == echoed and key is not None and key != request


async def test_no_routing_key_outside_a_request() -> None:
    await serve("client-7")
    assert current_routing_key() is None
