"""The raw front end, for the benchmarks: a bare asyncio HTTP/1.1 server.

Keep-alive, Content-Length or chunked request bodies, answers from a cache of encoded bodies (a
body depends on its `Plan` only), on uvloop when the CLI finds it. About 10,000 req/s on 2
cores: a framework would spend more CPU here than the gateways under test, so this is the
ceiling that isolates a gateway's own cost. It checks nothing: request checks would cost the
hot path what it is there to avoid.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Any, cast

from bench.vllm_standin.answers import (
    OVERLOADED,
    Plan,
    completion_payload,
    detokenize_payload,
    encode,
    error_payload,
    models_payload,
    prompt_text,
    stream_payloads,
    tokenize_payload,
)
from bench.vllm_standin.state import Options, StandIn

__all__ = ["RawHandler", "serve_raw"]

_JSON = b"application/json"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}
_REASONS[503] = "Service Unavailable"
_GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions")


class RawHandler:
    """The raw front end's request handling, answering from a cache of encoded bodies."""

    def __init__(self, state: StandIn) -> None:
        self.state = state
        self._cache: dict[Plan, tuple[bytes, bytes]] = {}

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes, bytes, bool]:
        """(status, content type, body, generation call) for one request."""
        state = self.state
        path = path.split("?", 1)[0]
        if path == "/stats":
            return 200, _JSON, json.dumps(asdict(state.stats)).encode(), False
        if path == "/stats/reset":
            state.reset()
            return 200, _JSON, b'{"reset": true}', False
        state.count(path)
        if method == "GET" and path == "/v1/models":
            return 200, _JSON, encode(models_payload(state.model)), False
        if method == "GET" and path in ("/health", "/ping"):
            return 200, _JSON, b"{}", False
        if method != "POST":
            return self._error(404, f"no route {method} {path}")
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            return self._error(400, "body is not JSON")
        if not isinstance(request, dict):
            return self._error(400, "body is not a JSON object")
        if path in _GENERATION_PATHS:
            if (fault := state.admit()) is not None:
                message = OVERLOADED if fault == 503 else "injected fault"
                return self._error(fault, message, generation=True)
            return self._generate(request, chat=path == "/v1/chat/completions")
        if path == "/tokenize":
            text = prompt_text(request.get("messages"), request.get("prompt"))
            return 200, _JSON, encode(tokenize_payload(text)), False
        if path == "/detokenize":
            return 200, _JSON, encode(detokenize_payload(request.get("tokens"))), False
        return self._error(404, f"no route {method} {path}")

    def _error(
        self, status: int, message: str, generation: bool = False
    ) -> tuple[int, bytes, bytes, bool]:
        return status, _JSON, encode(error_payload(status, message)), generation

    def _generate(self, request: dict[str, Any], chat: bool) -> tuple[int, bytes, bytes, bool]:
        plan = self.state.plan(
            chat,
            request.get("n"),
            request.get("max_tokens") or request.get("max_completion_tokens"),
            request.get("stream"),
            request.get("stream_options"),
            prompt_text(request.get("messages"), request.get("prompt")),
        )
        if isinstance(plan, str):
            return self._error(400, plan)
        # Bodies differ only by the plan, so each is encoded once.
        cached = self._cache.get(plan)
        if cached is None:
            if plan.stream:
                chunks = stream_payloads(plan)
                body = b"".join(b"data: " + encode(c) + b"\n\n" for c in chunks)
                cached = (b"text/event-stream", body + b"data: [DONE]\n\n")
            else:
                cached = (_JSON, encode(completion_payload(plan)))
            if len(self._cache) < 4096:
                self._cache[plan] = cached
        return 200, cached[0], cached[1], True


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: parse requests, answer them in order."""

    def __init__(self, handler: RawHandler) -> None:
        self._handler = handler
        self._buffer = bytearray()
        self._transport: asyncio.WriteTransport | None = None
        # With a latency, answers wait in tasks; chaining them keeps pipelined answers in order.
        self._previous: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transport writes; uvloop's do not subclass asyncio's, so no isinstance.
        self._transport = cast(asyncio.WriteTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None:
            request = self._parse()
            if request is None:
                return
            self._dispatch(*request)

    def _parse(self) -> tuple[str, str, bytes, bool] | None:
        """(method, path, body, keep-alive) of the first complete request in the buffer."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        method, path, version = (head[0].split(" ") + ["", "", ""])[:3]
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parsed = _dechunk(self._buffer, start)
            if parsed is None:
                return None
            body, consumed = parsed
        else:
            length = int(headers.get("content-length") or 0)
            if len(self._buffer) < start + length:
                return None
            body, consumed = bytes(self._buffer[start : start + length]), start + length
        del self._buffer[:consumed]
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" and (version != "HTTP/1.0" or connection == "keep-alive")
        return method, path, body, keep_alive

    def _dispatch(self, method: str, path: str, body: bytes, keep_alive: bool) -> None:
        status, kind, payload, generation = self._handler.handle(method, path, body)
        extra = b""
        if status == 503 and self._handler.state.options.retry_after:
            extra = b"Retry-After: 0\r\n"
        response = b"".join(
            (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n".encode(),
                b"Content-Type: ",
                kind,
                f"\r\nContent-Length: {len(payload)}\r\n".encode(),
                extra,
                b"" if keep_alive else b"Connection: close\r\n",
                b"\r\n",
                payload,
            )
        )
        delay = self._handler.state.options.latency_s if generation else 0.0
        if delay <= 0 and self._previous is None:
            self._write(response, keep_alive)
            return
        self._previous = asyncio.ensure_future(
            self._write_later(self._previous, delay, response, keep_alive)
        )

    async def _write_later(
        self, previous: asyncio.Task[None] | None, delay: float, response: bytes, keep: bool
    ) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if previous is not None:
            await previous
        self._write(response, keep)
        if self._previous is asyncio.current_task():
            self._previous = None

    def _write(self, response: bytes, keep_alive: bool) -> None:
        if self._transport is None:
            return
        self._transport.write(response)
        if not keep_alive:
            self._transport.close()
            self._transport = None


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """(body, bytes consumed) of a complete chunked body starting at `start`, else None."""
    body = bytearray()
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        position = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n", position)
            return None if trailer_end < 0 else (bytes(body), trailer_end + 2)
        if len(buffer) < position + size + 2:
            return None
        body += buffer[position : position + size]
        position += size + 2


async def serve_raw(host: str, port: int, options: Options) -> None:
    """Serve the raw front end until cancelled."""
    handler = RawHandler(StandIn(options))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(handler), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(f"vllm_standin (raw) listening on http://{host}:{bound}", flush=True)
    async with server:
        await server.serve_forever()
