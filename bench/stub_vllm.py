"""A zero-latency stand-in for vLLM's OpenAI server, with two front ends, for the benchmarks.

Run it by hand, or let `bench/gateway.py` and `bench/faults.py` start it:

    .venv/bin/python -m bench.stub_vllm --port 8100
    .venv/bin/python -m bench.stub_vllm --port 8100 --latency-ms 50 --fail-503 0.3
    .venv/bin/python -m bench.stub_vllm --port 8100 --frontend fastapi

It answers with vLLM's shapes: `GET /v1/models` (one model), `POST /v1/chat/completions` and
`POST /v1/completions` (`n` choices with `index`, `message` or `text`, `finish_reason`,
`token_ids`, and `usage`; `stream: true` gives SSE chunks ending in `data: [DONE]`), and
`POST /tokenize` / `/detokenize`. Every answer is a short sum, "The answer is 4." for most
choice indexes and another number for a few, the same for the same index, so a majority vote
has groups to count. `GET /stats` tells how many calls it received (`POST /stats/reset` zeroes
them), so a benchmark can report backend calls per client request.

Two front ends serve the same routes, options and answers (the answers, counters and faults are
shared code; only the HTTP side differs):

- `raw` (the default): a bare asyncio HTTP/1.1 protocol (keep-alive, Content-Length or chunked
  request bodies) answering from a cache of encoded bodies, on uvloop when it is importable.
  About 10,000 req/s on 2 cores: a framework would spend more CPU here than the gateways under
  test, so this is the ceiling that isolates a gateway's own cost.
- `fastapi`: built the way vLLM's own OpenAI-compatible API server is. A FastAPI app with
  vLLM's CORS middleware, the body parsed into pydantic request models
  (`ChatCompletionRequest`, `CompletionRequest`: extra fields allowed), the handler raced
  against a listener for the client's disconnect (vLLM's `with_cancellation`), the answer built
  as pydantic response models and returned as `JSONResponse(content=response.model_dump())`
  (stream chunks as `model_dump_json(exclude_unset=True)`), validation errors as 400 OpenAI
  error objects, served by uvicorn with uvloop and httptools, one process, no access log.
  Nothing is cached: each request pays for the HTTP, validation and serialisation work of
  vLLM's front end, minus the engine. The benchmark's issue measured "the stub called directly"
  at about 882 req/s at c=64, the cost of a vLLM-shaped FastAPI front end; with this one,
  "× direct" reads as the share of a real vLLM front end's throughput that a gateway keeps,
  rather than of a ceiling no backend reaches. It is lighter than vLLM's whole front end (whose
  request model has some 80 fields and which also renders the chat template, tokenizes and
  talks to the engine process): a first smoke run on 2 shared cores gave about 3,800 req/s at
  c=64 with n=8, not 882, so its ratios are lower bounds on the share a gateway keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Required, cast

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

# pydantic reads TypedDicts only from typing_extensions before Python 3.12.
from typing_extensions import TypedDict

MODEL = "stub-model"
MAX_MODEL_LEN = 4096
FRONTENDS = ("raw", "fastapi")
# The answer of choice `index` is ANSWERS[index % len(ANSWERS)]: 4 wins any vote of n >= 3.
ANSWERS = ("4", "4", "4", "5", "4", "4", "3", "4")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}
_GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions")
_OVERLOADED = "The server is overloaded (stub fault injection)."


def answer_text(index: int) -> str:
    """The deterministic answer of choice `index`."""
    return f"The answer is {ANSWERS[index % len(ANSWERS)]}."


@dataclass
class Stats:
    """What the stub received since its last reset."""

    calls: int = 0
    generation_calls: int = 0
    choices: int = 0
    failed_503: int = 0
    paths: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Options:
    latency_s: float = 0.0
    fail_503: float = 0.0
    retry_after: bool = False
    model: str = MODEL


@dataclass(frozen=True)
class Generation:
    """What a generation request's answer depends on; answers differ by nothing else."""

    chat: bool
    n: int
    max_tokens: int
    stream: bool
    include_usage: bool
    prompt_tokens: int


class Stub:
    """What both front ends share: options, counters, fault injection and request checks."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.stats = Stats()
        self._random = random.Random()

    def reset(self) -> None:
        self.stats = Stats()

    def count(self, path: str) -> None:
        """One call to `path` (every route but the stats ones counts)."""
        self.stats.calls += 1
        self.stats.paths[path] = self.stats.paths.get(path, 0) + 1

    def admit(self) -> bool:
        """Counts a generation call; False when fault injection answers it with a 503."""
        self.stats.generation_calls += 1
        if self.options.fail_503 and self._random.random() < self.options.fail_503:
            self.stats.failed_503 += 1
            return False
        return True

    def plan(
        self,
        chat: bool,
        n: Any,
        max_tokens: Any,
        stream: Any,
        stream_options: Mapping[str, Any] | None,
        prompt: str,
    ) -> Generation | str:
        """The answer to give, from the request's fields, or why the request is invalid."""
        n = n or 1
        max_tokens = max_tokens or 16
        if not isinstance(n, int) or not isinstance(max_tokens, int) or n < 1 or max_tokens < 1:
            return "n and max_tokens must be positive integers"
        self.stats.choices += n
        include_usage = bool((stream_options or {}).get("include_usage"))
        prompt_tokens = max(1, len(prompt) // 4)
        return Generation(chat, n, max_tokens, bool(stream), include_usage, prompt_tokens)


# --- the answers, as JSON-ready dicts -----------------------------------------------------------


def prompt_text(messages: Any, prompt: Any) -> str:
    """The text a request's prompt counts as: its messages' roles and contents, or `prompt`."""
    if isinstance(messages, list):
        return "".join(
            f"{m.get('role', '')}: {m.get('content', '')}\n"
            for m in messages
            if isinstance(m, dict)
        )
    return prompt if isinstance(prompt, str) else ""


def models_payload(model: str) -> dict[str, Any]:
    card = {
        "id": model,
        "object": "model",
        "created": 0,
        "owned_by": "vllm",
        "max_model_len": MAX_MODEL_LEN,
    }
    return {"object": "list", "data": [card]}


def error_payload(status: int, message: str) -> dict[str, Any]:
    kind = "ServiceUnavailableError" if status == 503 else "BadRequestError"
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


def tokenize_payload(text: str) -> dict[str, Any]:
    tokens = list(text.encode())
    return {"count": len(tokens), "max_model_len": MAX_MODEL_LEN, "tokens": tokens}


def detokenize_payload(tokens: Any) -> dict[str, Any]:
    return {"prompt": bytes(int(t) % 256 for t in tokens or ()).decode(errors="replace")}


def _choice_tokens(index: int, max_tokens: int) -> tuple[list[str], list[int], str]:
    words = answer_text(index).split(" ")
    finish = "stop"
    if len(words) > max_tokens:
        words, finish = words[:max_tokens], "length"
    # One token a word; ids differ by answer so token-level consumers see different sequences.
    ids = [100 + len(w) * 7 + ord(w[0]) for w in words]
    return words, ids, finish


def _usage(n: int, max_tokens: int, prompt_tokens: int) -> dict[str, int]:
    completion = sum(len(_choice_tokens(i, max_tokens)[0]) for i in range(n))
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


def completion_payload(plan: Generation, model: str) -> dict[str, Any]:
    """The whole (non-streamed) answer."""
    choices = []
    for index in range(plan.n):
        words, ids, finish = _choice_tokens(index, plan.max_tokens)
        text = " ".join(words)
        choice: dict[str, Any] = {"index": index}
        if plan.chat:
            choice["message"] = {"role": "assistant", "content": text, "tool_calls": []}
        else:
            choice["text"] = text
        choice.update(logprobs=None, finish_reason=finish, stop_reason=None, token_ids=ids)
        choices.append(choice)
    return {
        "id": "stub-1",
        "object": "chat.completion" if plan.chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": _usage(plan.n, plan.max_tokens, plan.prompt_tokens),
    }


def stream_payloads(plan: Generation, model: str) -> list[dict[str, Any]]:
    """The streamed answer's chunks, one a token, then the usage when asked; `[DONE]` follows."""
    kind = "chat.completion.chunk" if plan.chat else "text_completion"
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": "stub-1",
            "object": kind,
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }

    chunks: list[dict[str, Any]] = []
    for index in range(plan.n):
        words, ids, finish = _choice_tokens(index, plan.max_tokens)
        for position, (word, token) in enumerate(zip(words, ids, strict=True)):
            piece = word if position == 0 else " " + word
            last = position == len(words) - 1
            choice: dict[str, Any] = {"index": index}
            if plan.chat:
                delta: dict[str, Any] = {"role": "assistant"} if position == 0 else {}
                delta["content"] = piece
                choice["delta"] = delta
            else:
                choice["text"] = piece
            choice.update(logprobs=None, finish_reason=finish if last else None, token_ids=[token])
            chunks.append(chunk([choice]))
    if plan.include_usage:
        chunks.append(chunk([], usage=_usage(plan.n, plan.max_tokens, plan.prompt_tokens)))
    return chunks


def _encode(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


# --- the raw front end --------------------------------------------------------------------------


class RawStub(Stub):
    """The raw front end's request handling, answering from a cache of encoded bodies."""

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self._cache: dict[Generation, tuple[bytes, bytes]] = {}

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes, bytes, bool]:
        """(status, content type, body, generation call) for one request."""
        path = path.split("?", 1)[0]
        if path == "/stats":
            return 200, b"application/json", json.dumps(asdict(self.stats)).encode(), False
        if path == "/stats/reset":
            self.reset()
            return 200, b"application/json", b'{"reset": true}', False
        self.count(path)
        if method == "GET" and path == "/v1/models":
            return 200, b"application/json", _encode(models_payload(self.options.model)), False
        if method == "GET" and path in ("/health", "/ping"):
            return 200, b"application/json", b"{}", False
        if method != "POST":
            return self._error(404, f"no route {method} {path}")
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            return self._error(400, "body is not JSON")
        if not isinstance(request, dict):
            return self._error(400, "body is not a JSON object")
        if path in _GENERATION_PATHS:
            if not self.admit():
                return self._error(503, _OVERLOADED)
            return self._generate(request, chat=path == "/v1/chat/completions")
        if path == "/tokenize":
            text = prompt_text(request.get("messages"), request.get("prompt"))
            return 200, b"application/json", _encode(tokenize_payload(text)), False
        if path == "/detokenize":
            payload = detokenize_payload(request.get("tokens"))
            return 200, b"application/json", _encode(payload), False
        return self._error(404, f"no route {method} {path}")

    def _error(self, status: int, message: str) -> tuple[int, bytes, bytes, bool]:
        return status, b"application/json", _encode(error_payload(status, message)), status == 503

    def _generate(self, request: dict[str, Any], chat: bool) -> tuple[int, bytes, bytes, bool]:
        plan = self.plan(
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
                chunks = stream_payloads(plan, self.options.model)
                body = b"".join(b"data: " + _encode(c) + b"\n\n" for c in chunks)
                cached = (b"text/event-stream", body + b"data: [DONE]\n\n")
            else:
                cached = (
                    b"application/json",
                    _encode(completion_payload(plan, self.options.model)),
                )
            if len(self._cache) < 4096:
                self._cache[plan] = cached
        return 200, cached[0], cached[1], True


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: parse requests, answer them in order."""

    def __init__(self, stub: RawStub) -> None:
        self._stub = stub
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
        status, kind, payload, generation = self._stub.handle(method, path, body)
        extra = b""
        if status == 503 and self._stub.options.retry_after:
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
        delay = self._stub.options.latency_s if generation else 0.0
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
    stub = RawStub(options)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(stub), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(f"stub_vllm (raw) listening on http://{host}:{bound}", flush=True)
    async with server:
        await server.serve_forever()


# --- the fastapi front end: vLLM's protocol models, trimmed to what the stub reads --------------


class OpenAIBaseModel(BaseModel):
    # vLLM's base model: unknown fields are accepted (vLLM logs them) rather than rejected.
    model_config = ConfigDict(extra="allow")


class ChatCompletionMessageParam(TypedDict, total=False):
    # vLLM's messages are a union of TypedDicts: pydantic checks them and keeps them as dicts.
    role: Required[str]
    content: str | list[dict[str, Any]] | None
    name: str


class StreamOptions(OpenAIBaseModel):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = False


class ChatCompletionRequest(OpenAIBaseModel):
    messages: list[ChatCompletionMessageParam]
    model: str | None = None
    n: int | None = 1
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = 0
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    return_token_ids: bool | None = None


class CompletionRequest(OpenAIBaseModel):
    model: str | None = None
    prompt: list[int] | list[list[int]] | str | list[str] | None = None
    n: int | None = 1
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: int | None = None
    echo: bool | None = False
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    return_token_ids: bool | None = None


class TokenizeRequest(OpenAIBaseModel):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatCompletionMessageParam] | None = None


class DetokenizeRequest(OpenAIBaseModel):
    model: str | None = None
    tokens: list[int]


# Response models: their fields, in their order, are the raw front end's, so both give one JSON.


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "vllm"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard] = Field(default_factory=list)


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    error: ErrorInfo


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatMessage(BaseModel):
    role: str
    content: str | None = None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)


class ChatCompletionResponseChoice(BaseModel):
    index: int
    message: ChatMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = "stop"
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionResponseChoice]
    usage: UsageInfo


class CompletionResponseChoice(BaseModel):
    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionResponseChoice]
    usage: UsageInfo


class DeltaMessage(BaseModel):
    role: str | None = None
    content: str | None = None


class ChatCompletionResponseStreamChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    token_ids: list[int] | None = None


class ChatCompletionStreamResponse(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionResponseStreamChoice]
    usage: UsageInfo | None = None


class CompletionResponseStreamChoice(BaseModel):
    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    token_ids: list[int] | None = None


class CompletionStreamResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionResponseStreamChoice]
    usage: UsageInfo | None = None


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    prompt: str


async def _disconnected(raw_request: Request) -> None:
    while (await raw_request.receive())["type"] != "http.disconnect":
        pass


async def _with_cancellation(raw_request: Request, work: Awaitable[Response]) -> Response | None:
    """vLLM's `with_cancellation`: the handler races a listener for the client's disconnect."""
    handler = asyncio.ensure_future(work)
    listener = asyncio.ensure_future(_disconnected(raw_request))
    done, pending = await asyncio.wait((handler, listener), return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return handler.result() if handler in done else None


def build_app(stub: Stub) -> FastAPI:
    """vLLM's API server's shape over the stub's shared answers and counters."""
    options = stub.options
    app = FastAPI()
    # vLLM always adds CORS middleware (allowing every origin by default).
    app.add_middleware(
        CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"]
    )

    def error(status: int, message: str) -> JSONResponse:
        response = ErrorResponse.model_validate(error_payload(status, message))
        headers = {"Retry-After": "0"} if status == 503 and options.retry_after else None
        return JSONResponse(content=response.model_dump(), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(raw_request: Request, exc: RequestValidationError) -> JSONResponse:
        # vLLM answers a body that does not validate with a 400 OpenAI error object.
        stub.count(raw_request.url.path)
        return error(400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def no_route(raw_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The raw front end's 404 for any unknown route or method, counted like it counts them.
        stub.count(raw_request.url.path)
        return error(404, f"no route {raw_request.method} {raw_request.url.path}")

    @app.api_route("/stats", methods=["GET", "POST"])
    async def stats() -> JSONResponse:
        return JSONResponse(content=asdict(stub.stats))

    @app.api_route("/stats/reset", methods=["GET", "POST"])
    async def reset() -> JSONResponse:
        stub.reset()
        return JSONResponse(content={"reset": True})

    @app.get("/health")
    @app.get("/ping")
    async def health(raw_request: Request) -> JSONResponse:
        stub.count(raw_request.url.path)
        return JSONResponse(content={})

    @app.get("/v1/models")
    async def models(raw_request: Request) -> JSONResponse:
        stub.count(raw_request.url.path)
        return JSONResponse(
            content=ModelList.model_validate(models_payload(options.model)).model_dump()
        )

    @app.post("/tokenize")
    async def tokenize(request: TokenizeRequest, raw_request: Request) -> JSONResponse:
        stub.count(raw_request.url.path)
        payload = tokenize_payload(prompt_text(request.messages, request.prompt))
        return JSONResponse(content=TokenizeResponse.model_validate(payload).model_dump())

    @app.post("/detokenize")
    async def detokenize(request: DetokenizeRequest, raw_request: Request) -> JSONResponse:
        stub.count(raw_request.url.path)
        payload = detokenize_payload(request.tokens)
        return JSONResponse(content=DetokenizeResponse.model_validate(payload).model_dump())

    async def generate(
        request: ChatCompletionRequest | CompletionRequest, raw_request: Request
    ) -> Response:
        stub.count(raw_request.url.path)
        chat = isinstance(request, ChatCompletionRequest)
        if isinstance(request, ChatCompletionRequest):
            prompt = prompt_text(request.messages, None)
        else:
            prompt = prompt_text(None, request.prompt)
        if not stub.admit():
            if options.latency_s > 0:
                await asyncio.sleep(options.latency_s)
            return error(503, _OVERLOADED)
        stream_options = request.stream_options.model_dump() if request.stream_options else None
        plan = stub.plan(
            chat,
            request.n,
            request.max_tokens or request.max_completion_tokens,
            request.stream,
            stream_options,
            prompt,
        )
        if isinstance(plan, str):
            return error(400, plan)
        if options.latency_s > 0:
            await asyncio.sleep(options.latency_s)
        if plan.stream:
            return StreamingResponse(_sse(plan, options.model), media_type="text/event-stream")
        payload = completion_payload(plan, options.model)
        response: BaseModel
        if chat:
            response = ChatCompletionResponse.model_validate(payload)
        else:
            response = CompletionResponse.model_validate(payload)
        return JSONResponse(content=response.model_dump())

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        request: ChatCompletionRequest, raw_request: Request
    ) -> Response | None:
        return await _with_cancellation(raw_request, generate(request, raw_request))

    @app.post("/v1/completions", response_model=None)
    async def completions(request: CompletionRequest, raw_request: Request) -> Response | None:
        return await _with_cancellation(raw_request, generate(request, raw_request))

    return app


async def _sse(plan: Generation, model: str) -> AsyncIterator[str]:
    """vLLM's stream: one chunk model a token, dumped with exclude_unset, then `[DONE]`."""
    kind: type[ChatCompletionStreamResponse] | type[CompletionStreamResponse]
    kind = ChatCompletionStreamResponse if plan.chat else CompletionStreamResponse
    for payload in stream_payloads(plan, model):
        yield f"data: {kind.model_validate(payload).model_dump_json(exclude_unset=True)}\n\n"
    yield "data: [DONE]\n\n"


def serve_fastapi(host: str, port: int, options: Options) -> None:
    app = build_app(Stub(options))
    # Bound here, like vLLM does, so port 0 can be reported before uvicorn serves it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=4096,
        timeout_keep_alive=5,
    )
    print(f"stub_vllm (fastapi) listening on http://{host}:{bound}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100, help="0 picks a free port")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument(
        "--frontend",
        choices=FRONTENDS,
        default="raw",
        help="raw: a bare asyncio server, the ceiling that isolates a gateway's own cost; "
        "fastapi: FastAPI + pydantic + uvicorn shaped like vLLM's API server, about its "
        "per-request HTTP and pydantic cost (toward the issue's ~882 req/s 'direct' at c=64)",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="wait this long before each generation"
    )
    parser.add_argument(
        "--fail-503",
        type=float,
        default=0.0,
        help="answer this random fraction of generation calls with a vLLM-style 503",
    )
    parser.add_argument(
        "--retry-after", action="store_true", help="send Retry-After: 0 with the 503s"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not 0.0 <= args.fail_503 <= 1.0:
        sys.exit("--fail-503 is a fraction between 0 and 1")
    options = Options(
        latency_s=args.latency_ms / 1000,
        fail_503=args.fail_503,
        retry_after=args.retry_after,
        model=args.model,
    )
    if args.frontend == "fastapi":
        serve_fastapi(args.host, args.port, options)
        return
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve_raw(args.host, args.port, options))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
