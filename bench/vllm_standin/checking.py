"""The checking front end: a FastAPI app that records every request and checks its shape.

A request whose shape vLLM would not accept, or that misses a field the gateway relies on
(`checks`), is answered with a 400 and recorded in `StandIn.violations`. Besides vLLM's
generation routes it serves `/tokenize` (as the gateway counts tokens), a PRM's `/pooling`, an
ORM's `/classify` and `/health` (which routers probe). Prompts steer it: a user message
containing TOO_LONG gets vLLM's context-length 400, and one containing SLOW makes it wait
`slow_s` before answering. It writes tool calls and structured outputs (`constrained`), honours
`stop` and continues an assistant prefix of what it writes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from bench.vllm_standin.answers import (
    MAX_MODEL_LEN,
    Plan,
    classify_payload,
    completion_payload,
    count_tokens,
    error_payload,
    models_payload,
    pooling_payload,
    stream_payloads,
    tokenize_payload,
)
from bench.vllm_standin.checks import (
    Violation,
    check_chat,
    check_classify,
    check_completion,
    check_pooling,
    check_tokenize,
)
from bench.vllm_standin.constrained import (
    chosen_function,
    structured_text,
    tool_call,
    tool_call_chunks,
    tool_call_payload,
)
from bench.vllm_standin.state import Options, Recorded, StandIn
from bench.vllm_standin.thinking import scripted_text, thinking_text

__all__ = ["create_checking_app", "serve_checking"]


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse(error_payload(status, message), status_code=status)


def _sse(chunks: Sequence[Mapping[str, Any]]) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream")


def _written_text(
    body: Mapping[str, Any], model_text: str, prefix: str, settles: bool = False
) -> str:
    """What the model writes: its answer (JSON of the schema when constrained), continued after
    an assistant prefix of it (as a reasoning model, `bench.vllm_standin.thinking`, where it
    thinks; `settles` for a scripted one), cut at the first stop string as vLLM cuts it."""
    written = model_text
    if (constraint := body.get("structured_outputs")) is not None:
        written = structured_text(constraint)
    rest = written[len(prefix) :] if written.startswith(prefix) else written
    if (thought := thinking_text(body, written, prefix, settles)) is not None:
        rest = thought
    for stop in body.get("stop") or ():
        if stop in rest:
            keep = len(stop) if body.get("include_stop_str_in_output") else 0
            rest = rest[: rest.index(stop) + keep]
    return rest


def create_checking_app(state: StandIn) -> FastAPI:
    """The checking front end over `state`."""
    app = FastAPI()

    async def record(request: Request) -> dict[str, Any]:
        body: dict[str, Any] = await request.json()
        state.requests.append(Recorded(request.url.path, body, dict(request.headers)))
        state.count(request.url.path)
        return body

    @app.exception_handler(Violation)
    async def violation(request: Request, exc: Violation) -> JSONResponse:
        state.violations.append(str(exc))
        return _error(f"stand-in rejected the request: {exc}")

    @app.get("/health")
    async def health() -> Response:
        # As vLLM answers it; routers probe it before they send a worker any request.
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return models_payload(state.model)

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        return tokenize_payload(check_tokenize(await record(request), state.model))

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        body = await record(request)
        if (fault := state.admit()) is not None:
            return _error("injected fault", fault)
        messages = check_chat(body, state.model, state.options.ignored)
        text = " ".join(m["content"] for m in messages)
        prefix = messages[-1]["content"] if body.get("continue_final_message") else ""
        if (refusal := await steer(text)) is not None:
            return refusal
        prompt_tokens = count_tokens(text)
        if (chosen := chosen_function(body, messages)) is not None:
            function, finish = chosen
            state.tool_calls += 1
            calls = [tool_call(function, state.tool_calls)]
            if body.get("stream"):
                return _sse(tool_call_chunks(state.model, body["n"], prompt_tokens, calls, finish))
            return tool_call_payload(state.model, body["n"], prompt_tokens, calls, finish)
        return answer(body, text, chat=True, prefix=prefix)

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Any:
        body = await record(request)
        if (fault := state.admit()) is not None:
            return _error("injected fault", fault)
        prompt = check_completion(body, state.model, state.options.ignored)
        if (refusal := await steer(prompt)) is not None:
            return refusal
        return answer(body, prompt, chat=False)

    async def steer(prompt: str) -> JSONResponse | None:
        if "TOO_LONG" in prompt:
            return _error(f"This model's maximum context length is {MAX_MODEL_LEN} tokens.")
        if "SLOW" in prompt:
            await asyncio.sleep(state.slow_s)
        if state.options.latency_s:
            # Every generation takes this long, as `--latency-ms` makes the raw front end's.
            await asyncio.sleep(state.options.latency_s)
        return None

    def answer(body: dict[str, Any], prompt: str, chat: bool, prefix: str = "") -> Any:
        scripted = scripted_text(state.options.script, prompt)
        if scripted is not None:
            texts: tuple[str, ...] = (_written_text(body, scripted, prefix, settles=True),)
        else:
            texts = tuple(_written_text(body, t, prefix) for t in state.options.answers)
        plan = state.plan(
            chat,
            body["n"],
            body["max_tokens"],
            body.get("stream"),
            body.get("stream_options"),
            prompt,
            texts,
        )
        assert isinstance(plan, Plan), plan
        if plan.stream:
            return _sse(stream_payloads(plan))
        return completion_payload(plan)

    @app.post("/pooling")
    async def pooling(request: Request) -> dict[str, Any]:
        return pooling_payload(check_pooling(await record(request)))

    @app.post("/classify")
    async def classify(request: Request) -> dict[str, Any]:
        body = await record(request)
        return classify_payload(body.get("model"), check_classify(body))

    return app


def serve_checking(host: str, port: int, options: Options) -> None:
    """Serve the checking front end as a process until interrupted (a benchmark that wants its
    checks, its continuations or a script: `bench.thinking`)."""
    app = create_checking_app(StandIn(options))
    print(f"vllm_standin (checking) listening on http://{host}:{port}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
