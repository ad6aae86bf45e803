"""A loopback stand-in for vLLM's OpenAI-compatible server that checks what the gateway sends.

It answers with the shapes vLLM answers with (choices with `token_ids`, usage, SSE chunks ending
in `data: [DONE]`, `/tokenize` counts) and records every request. A request whose shape vLLM
would not accept, or that misses a field the gateway relies on, is answered with a 400 and
recorded in `violations`, so a test fails both at the gateway and in the stand-in's record.

Prompts steer it: a user message containing TOO_LONG gets vLLM's context-length 400, and one
containing SLOW makes it wait before answering. Faults are injected through `faults`: the next
generation calls are answered with those statuses (503 and 429 with a vLLM error body), in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.factories import free_port

SERVED_MODEL = "standin/SmolLM2-135M-Instruct"
PRM_MODEL = "standin/Qwen2.5-Math-PRM-7B"
PRM_STEP_TAG = "<extra_0>"
ANSWER = "First add the numbers.\nAnswer: 7"

_GENERATION_FIELDS = {
    "model",
    "n",
    "max_tokens",
    "temperature",
    "top_p",
    "return_token_ids",
    "stop",
    "include_stop_str_in_output",
    "seed",
    "logprobs",
    "top_logprobs",
    "stream",
    "stream_options",
}
_CHAT_FIELDS = _GENERATION_FIELDS | {"messages", "continue_final_message", "add_generation_prompt"}
_COMPLETION_FIELDS = _GENERATION_FIELDS | {"prompt", "echo", "add_special_tokens"}


@dataclass
class Recorded:
    """One request the stand-in received."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class StandIn:
    """A running stand-in: its URL and what it saw."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    slow_s: float = 5.0
    model: str = SERVED_MODEL
    faults: list[int] = field(default_factory=list)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


def _words(text: str) -> list[str]:
    return text.split(" ")


def _error(message: str, status: int = 400) -> JSONResponse:
    body = {"error": {"message": message, "type": "BadRequestError", "param": None, "code": status}}
    return JSONResponse(body, status_code=status)


def create_standin(state: StandIn) -> FastAPI:
    app = FastAPI()

    def check(condition: bool, message: str) -> None:
        if not condition:
            state.violations.append(message)
            raise AssertionError(message)

    async def record(request: Request) -> dict[str, Any]:
        body: dict[str, Any] = await request.json()
        state.requests.append(Recorded(request.url.path, body, dict(request.headers)))
        return body

    def check_generation(body: dict[str, Any], allowed: set[str]) -> None:
        check(set(body) <= allowed, f"unexpected fields {sorted(set(body) - allowed)}")
        check(body.get("model") == state.model, f"model {body.get('model')!r}")
        check(body.get("return_token_ids") is True, "return_token_ids must be true")
        check(isinstance(body.get("n"), int) and body["n"] >= 1, "n must be a positive int")
        check(isinstance(body.get("max_tokens"), int), "max_tokens must be an int")
        if "include_stop_str_in_output" in body:
            check("stop" in body, "include_stop_str_in_output without stop")
        if body.get("stream"):
            check(body.get("stream_options") == {"include_usage": True}, "stream without usage")

    @app.exception_handler(AssertionError)
    async def violation(request: Request, exc: AssertionError) -> JSONResponse:
        return _error(f"stand-in rejected the request: {exc}")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": state.model, "object": "model"}]}

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        body = await record(request)
        check(body.get("model") == state.model, "tokenize without the model")
        check(isinstance(body.get("prompt"), str), "tokenize needs a prompt")
        check(body.get("add_special_tokens") is False, "counting must skip special tokens")
        tokens = list(range(len(_words(body["prompt"]))))
        return {"count": len(tokens), "max_model_len": 2048, "tokens": tokens}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        body = await record(request)
        if state.faults:
            return _error("injected fault", state.faults.pop(0))
        check_generation(body, _CHAT_FIELDS)
        messages: list[dict[str, Any]] = body.get("messages") or []
        check(isinstance(messages, list) and bool(messages), "messages must be a list")
        for message in messages:
            fields = set(message) - {"reasoning"}
            check(fields == {"role", "content"}, f"message fields {sorted(message)}")
            check(isinstance(message["content"], str), "content must be a string")
            if "reasoning" in message:
                # vLLM passes an earlier answer's reasoning to the chat template.
                check(message["role"] == "assistant", "only an assistant turn has reasoning")
                check(isinstance(message["reasoning"], str), "reasoning must be a string")
        if body.get("continue_final_message"):
            check(
                body.get("add_generation_prompt") is False, "continuing needs no generation prompt"
            )
            check(messages[-1]["role"] == "assistant", "only an assistant turn can be continued")
        text = " ".join(m["content"] for m in messages)
        prompt_tokens = len(_words(text))
        prefix = messages[-1]["content"] if body.get("continue_final_message") else ""
        return await answer(body, text, prompt_tokens, chat=True, prefix=prefix)

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Any:
        body = await record(request)
        check_generation(body, _COMPLETION_FIELDS)
        check(isinstance(body.get("prompt"), str), "prompt must be a string")
        return await answer(body, body["prompt"], len(_words(body["prompt"])), chat=False)

    @app.post("/pooling")
    async def pooling(request: Request) -> dict[str, Any]:
        # A STEP pooler answers one [negative, positive] row per step tag; here the n-th tag's
        # positive probability is 0.9 - 0.1 * n, so tests can tell the rows apart.
        body = await record(request)
        check(set(body) <= {"model", "input", "task"}, f"pooling fields {sorted(body)}")
        check(body.get("model") == PRM_MODEL, f"pooling model {body.get('model')!r}")
        check(body.get("task") == "token_classify", "PRMs are pooled with task token_classify")
        inputs: list[str] = body.get("input") or []
        check(isinstance(inputs, list) and all(isinstance(t, str) for t in inputs), "input list")
        data = []
        for index, text in enumerate(inputs):
            tags = text.count(PRM_STEP_TAG)
            check(tags > 0, "every PRM input needs its step tags")
            rows = [[round(0.1 + 0.1 * n, 4), round(0.9 - 0.1 * n, 4)] for n in range(tags)]
            data.append({"index": index, "object": "pooling", "data": rows})
        tokens: int = sum(len(_words(t)) for t in inputs)
        return {
            "id": "pool-1",
            "object": "list",
            "created": int(time.time()),
            "model": PRM_MODEL,
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.post("/classify")
    async def classify(request: Request) -> dict[str, Any]:
        # A sequence classifier: the positive probability grows with the input's length.
        body = await record(request)
        check(set(body) <= {"model", "input"}, f"classify fields {sorted(body)}")
        inputs: list[str] = body.get("input") or []
        check(isinstance(inputs, list) and all(isinstance(t, str) for t in inputs), "input list")
        data = []
        for index, text in enumerate(inputs):
            positive = min(0.99, len(text) / 1000)
            data.append(
                {
                    "index": index,
                    "label": "LABEL_1",
                    "num_classes": 2,
                    "probs": [1 - positive, positive],
                }
            )
        tokens: int = sum(len(_words(t)) for t in inputs)
        return {
            "id": "classify-1",
            "object": "list",
            "created": int(time.time()),
            "model": body.get("model"),
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def answer(
        body: dict[str, Any], text: str, prompt_tokens: int, chat: bool, prefix: str = ""
    ) -> Any:
        if "TOO_LONG" in text:
            return _error("This model's maximum context length is 2048 tokens.")
        if "SLOW" in text:
            await asyncio.sleep(state.slow_s)
        # A deterministic model: it always writes ANSWER, continuing it after a prefix of it.
        rest = ANSWER[len(prefix) :] if ANSWER.startswith(prefix) else ANSWER
        finish = "stop"
        for stop in body.get("stop") or ():
            # vLLM's stop semantics: cut at the first stop string, keeping it if asked.
            if stop in rest:
                keep = len(stop) if body.get("include_stop_str_in_output") else 0
                rest = rest[: rest.index(stop) + keep]
        words = _words(rest)
        if len(words) > body["max_tokens"]:
            words, finish = words[: body["max_tokens"]], "length"
        n = body["n"]
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n * len(words),
            "total_tokens": prompt_tokens + n * len(words),
        }
        if body.get("stream"):
            return StreamingResponse(
                stream(words, n, finish, usage, chat), media_type="text/event-stream"
            )
        choices = []
        for i in range(n):
            content = " ".join(words)
            choice: dict[str, Any] = {"index": i, "finish_reason": finish, "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": content, "reasoning": None}
            else:
                choice["text"] = content
            choice["token_ids"] = list(range(len(words)))
            choices.append(choice)
        kind = "chat.completion" if chat else "text_completion"
        return {
            "id": "standin-1",
            "object": kind,
            "created": int(time.time()),
            "model": state.model,
            "choices": choices,
            "usage": usage,
        }

    async def stream(
        words: list[str], n: int, finish: str, usage: dict[str, int], chat: bool
    ) -> AsyncIterator[str]:
        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            payload = {"id": "standin-1", "model": state.model, "choices": choices, **extra}
            return f"data: {json.dumps(payload)}\n\n"

        for i in range(n):
            if chat:
                yield chunk(
                    [{"index": i, "delta": {"role": "assistant", "content": ""}, "token_ids": []}]
                )
            for j, word in enumerate(words):
                piece = word if j == 0 else f" {word}"
                last = j == len(words) - 1
                content: dict[str, Any] = {"delta": {"content": piece}} if chat else {"text": piece}
                yield chunk(
                    [
                        {
                            "index": i,
                            **content,
                            "token_ids": [j],
                            "finish_reason": finish if last else None,
                        }
                    ]
                )
        yield chunk([], usage=usage)
        yield "data: [DONE]\n\n"

    return app


@contextlib.contextmanager
def run_standin(model: str = SERVED_MODEL) -> Iterator[StandIn]:
    """Serve a stand-in of `model` on a loopback port, in a thread of this process, until the
    block ends."""
    port = free_port()
    state = StandIn(url=f"http://127.0.0.1:{port}", model=model)
    config = uvicorn.Config(create_standin(state), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the vLLM stand-in did not start")
        time.sleep(0.05)
    try:
        yield state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
