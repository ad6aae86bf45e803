"""The vLLM-shaped front end, for the benchmarks: built the way vLLM's OpenAI API server is.

A FastAPI app with vLLM's CORS middleware, the body parsed into pydantic request models
(`protocol`: extra fields allowed), the handler raced against a listener for the client's
disconnect (vLLM's `with_cancellation`), the answer built as pydantic response models and
returned as `JSONResponse(content=response.model_dump())` (stream chunks as
`model_dump_json(exclude_unset=True)`), validation errors as 400 OpenAI error objects, served
by uvicorn with uvloop and httptools, one process, no access log. Nothing is cached: each
request pays for the HTTP, validation and serialisation work of vLLM's front end, minus the
engine. It checks nothing beyond what vLLM's models check.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable
from dataclasses import asdict

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from bench.vllm_standin.answers import (
    OVERLOADED,
    Plan,
    completion_payload,
    detokenize_payload,
    error_payload,
    models_payload,
    prompt_text,
    stream_payloads,
    tokenize_payload,
)
from bench.vllm_standin.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    ErrorResponse,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
)
from bench.vllm_standin.state import Options, StandIn

__all__ = ["create_vllm_app", "serve_vllm_app"]


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


def create_vllm_app(state: StandIn) -> FastAPI:
    """vLLM's API server's shape over the stand-in's shared answers and counters."""
    options = state.options
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
        state.count(raw_request.url.path)
        return error(400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def no_route(raw_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The raw front end's 404 for any unknown route or method, counted like it counts them.
        state.count(raw_request.url.path)
        return error(404, f"no route {raw_request.method} {raw_request.url.path}")

    @app.api_route("/stats", methods=["GET", "POST"])
    async def stats() -> JSONResponse:
        return JSONResponse(content=asdict(state.stats))

    @app.api_route("/stats/reset", methods=["GET", "POST"])
    async def reset() -> JSONResponse:
        state.reset()
        return JSONResponse(content={"reset": True})

    @app.get("/health")
    @app.get("/ping")
    async def health(raw_request: Request) -> JSONResponse:
        state.count(raw_request.url.path)
        return JSONResponse(content={})

    @app.get("/v1/models")
    async def models(raw_request: Request) -> JSONResponse:
        state.count(raw_request.url.path)
        return JSONResponse(
            content=ModelList.model_validate(models_payload(options.model)).model_dump()
        )

    @app.post("/tokenize")
    async def tokenize(request: TokenizeRequest, raw_request: Request) -> JSONResponse:
        state.count(raw_request.url.path)
        payload = tokenize_payload(prompt_text(request.messages, request.prompt))
        return JSONResponse(content=TokenizeResponse.model_validate(payload).model_dump())

    @app.post("/detokenize")
    async def detokenize(request: DetokenizeRequest, raw_request: Request) -> JSONResponse:
        state.count(raw_request.url.path)
        payload = detokenize_payload(request.tokens)
        return JSONResponse(content=DetokenizeResponse.model_validate(payload).model_dump())

    async def generate(
        request: ChatCompletionRequest | CompletionRequest, raw_request: Request
    ) -> Response:
        state.count(raw_request.url.path)
        chat = isinstance(request, ChatCompletionRequest)
        if isinstance(request, ChatCompletionRequest):
            prompt = prompt_text(request.messages, None)
        else:
            prompt = prompt_text(None, request.prompt)
        if (fault := state.admit()) is not None:
            if options.latency_s > 0:
                await asyncio.sleep(options.latency_s)
            return error(fault, OVERLOADED if fault == 503 else "injected fault")
        stream_options = request.stream_options.model_dump() if request.stream_options else None
        plan = state.plan(
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
            return StreamingResponse(_sse(plan), media_type="text/event-stream")
        payload = completion_payload(plan)
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


async def _sse(plan: Plan) -> AsyncIterator[str]:
    """vLLM's stream: one chunk model a token, dumped with exclude_unset, then `[DONE]`."""
    kind: type[ChatCompletionStreamResponse] | type[CompletionStreamResponse]
    kind = ChatCompletionStreamResponse if plan.chat else CompletionStreamResponse
    for payload in stream_payloads(plan):
        yield f"data: {kind.model_validate(payload).model_dump_json(exclude_unset=True)}\n\n"
    yield "data: [DONE]\n\n"


def serve_vllm_app(host: str, port: int, options: Options) -> None:
    """Serve the vLLM-shaped front end until interrupted."""
    app = create_vllm_app(StandIn(options))
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
    print(f"vllm_standin (fastapi) listening on http://{host}:{bound}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
