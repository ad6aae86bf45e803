"""A loopback stand-in for vLLM's OpenAI-compatible server that checks what the gateway sends.

It answers with the shapes vLLM answers with (choices with `token_ids`, usage, SSE chunks ending
in `data: [DONE]`, `/tokenize` counts) and records every request. A request whose shape vLLM
would not accept, or that misses a field the gateway relies on, is answered with a 400 and
recorded in `violations`, so a test fails both at the gateway and in the stand-in's record.

Tools: with `tools` and a `tool_choice` that forces a call (or `auto` when the last message
is a user's containing CALL), it answers as vLLM's tool parser does: one call of the named (or
first) function, arguments filled from its schema (`tool_call_arguments`), finish_reason
`tool_calls` (`stop` for a named function, as OpenAI's); streamed as vLLM streams calls, the
name first, then the arguments in pieces.

With `structured_outputs` it honours the constraint: the answer is a JSON instance of the schema
(`json`) or a small JSON object (`json_object`). Prompts steer it: a user message containing
TOO_LONG gets vLLM's context-length 400, and one containing SLOW makes it wait before answering.
Faults are injected through `faults`: the next generation calls are answered with those statuses
(503 and 429 with a vLLM error body), in order.
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
    "structured_outputs",
    "top_k",
    "min_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "logit_bias",
    "stop_token_ids",
}
# vLLM's structured_outputs: exactly one constraint; the gateway sends these two.
_CONSTRAINTS = {"json", "json_object", "regex", "choice", "grammar", "structural_tag"}
_CHAT_FIELDS = _GENERATION_FIELDS | {
    "messages",
    "continue_final_message",
    "add_generation_prompt",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
}
_SCHEMA_EXAMPLES: dict[str, Any] = {
    "string": "Paris",
    "number": 1.5,
    "integer": 3,
    "boolean": True,
    "array": [],
    "object": {},
}


def tool_call_arguments(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """The arguments the stand-in calls a function with: an example value per property."""
    properties = (parameters or {}).get("properties") or {}
    return {name: _SCHEMA_EXAMPLES.get(p.get("type"), "x") for name, p in properties.items()}


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
    tool_calls: int = 0

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


def _words(text: str) -> list[str]:
    return text.split(" ")


def _instance(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """A JSON value valid for `schema` (the subset pydantic models produce): what a grammar
    would let the model write."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _instance(root.get("$defs", {})[name], root)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return _instance(schema[key][0], root)
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        properties = schema.get("properties", {})
        return {k: _instance(v, root) for k, v in properties.items()} or {"answer": "7"}
    if kind == "array":
        return [_instance(schema.get("items", {"type": "string"}), root)]
    return {"string": "7", "integer": 7, "number": 7.5, "boolean": True, "null": None}[kind]


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
        if "structured_outputs" in body:
            constraint = body["structured_outputs"]
            check(isinstance(constraint, dict), "structured_outputs must be an object")
            given = set(constraint) & _CONSTRAINTS
            check(len(given) == 1, f"structured_outputs needs one constraint, got {sorted(given)}")
            if "json" in constraint:
                check(isinstance(constraint["json"], dict | str), "json must be a schema")
            if "json_object" in constraint:
                check(constraint["json_object"] is True, "json_object must be true")
        for name in ("min_p", "frequency_penalty", "presence_penalty", "repetition_penalty"):
            if name in body:
                check(isinstance(body[name], int | float), f"{name} must be a number")
        if "top_k" in body:
            check(isinstance(body["top_k"], int), "top_k must be an int")
        if "logit_bias" in body:
            bias = body["logit_bias"]
            check(
                isinstance(bias, dict)
                and all(k.isdigit() and isinstance(v, int | float) for k, v in bias.items()),
                "logit_bias maps token id strings to numbers",
            )
        if "stop_token_ids" in body:
            ids = body["stop_token_ids"]
            check(
                isinstance(ids, list) and all(isinstance(i, int) for i in ids),
                "stop_token_ids must be a list of ints",
            )

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
            fields = {"role", "content"}
            if message.get("role") == "assistant" and "tool_calls" in message:
                fields.add("tool_calls")
                for call in message["tool_calls"]:
                    check(set(call) == {"id", "type", "function"}, f"tool call {call}")
                    check(set(call["function"]) == {"name", "arguments"}, f"function {call}")
                    check(isinstance(call["function"]["arguments"], str), "arguments as text")
            if message.get("role") == "tool":
                fields.add("tool_call_id")
            if "reasoning" in message:
                # vLLM passes an earlier answer's reasoning to the chat template.
                check(message["role"] == "assistant", "only an assistant turn has reasoning")
                check(isinstance(message["reasoning"], str), "reasoning must be a string")
                fields.add("reasoning")
            check(set(message) == fields, f"message fields {sorted(message)}")
            check(isinstance(message["content"], str), "content must be a string")
        calls = tool_calls_for(body, messages)
        if body.get("continue_final_message"):
            check(
                body.get("add_generation_prompt") is False, "continuing needs no generation prompt"
            )
            check(messages[-1]["role"] == "assistant", "only an assistant turn can be continued")
        text = " ".join(m["content"] for m in messages)
        prompt_tokens = len(_words(text))
        prefix = messages[-1]["content"] if body.get("continue_final_message") else ""
        return await answer(body, text, prompt_tokens, chat=True, prefix=prefix, calls=calls)

    def tool_calls_for(
        body: dict[str, Any], messages: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], str] | None:
        """The calls vLLM's parser would return for this request and their finish reason."""
        tools = body.get("tools")
        choice = body.get("tool_choice", "auto" if tools else "none")
        check(choice == "none" or bool(tools), "tool_choice without tools")
        if not tools or choice == "none":
            return None
        for tool in tools:
            check(tool.get("type") == "function", "tools are functions")
            check(set(tool["function"]) <= {"name", "description", "parameters", "strict"}, "tool")
        by_name = {t["function"]["name"]: t["function"] for t in tools}
        if isinstance(choice, dict):
            check(choice.get("type") == "function", "a named tool_choice is a function")
            name = choice["function"]["name"]
            check(name in by_name, f"tool_choice names {name!r}, not among the tools")
            function, finish = by_name[name], "stop"
        elif choice == "required" or (
            messages[-1]["role"] == "user" and "CALL" in messages[-1]["content"]
        ):
            function, finish = next(iter(by_name.values())), "tool_calls"
        else:
            return None
        arguments = json.dumps(tool_call_arguments(function.get("parameters")))
        state.tool_calls += 1
        call = {
            "id": f"chatcmpl-tool-{state.tool_calls}",
            "type": "function",
            "function": {"name": function["name"], "arguments": arguments},
        }
        return [call], finish

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
        body: dict[str, Any],
        text: str,
        prompt_tokens: int,
        chat: bool,
        prefix: str = "",
        calls: tuple[list[dict[str, Any]], str] | None = None,
    ) -> Any:
        if "TOO_LONG" in text:
            return _error("This model's maximum context length is 2048 tokens.")
        if "SLOW" in text:
            await asyncio.sleep(state.slow_s)
        if calls is not None:
            return call_answer(body, prompt_tokens, *calls)
        # A deterministic model: it always writes ANSWER, continuing it after a prefix of it;
        # constrained, it writes JSON of the schema instead.
        written = ANSWER
        if (constraint := body.get("structured_outputs")) is not None:
            schema = constraint.get("json")
            schema = json.loads(schema) if isinstance(schema, str) else schema
            value = {"answer": "7"} if schema is None else _instance(schema, schema)
            written = json.dumps(value, separators=(", ", ": "))
        rest = written[len(prefix) :] if written.startswith(prefix) else written
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

    def call_answer(
        body: dict[str, Any], prompt_tokens: int, calls: list[dict[str, Any]], finish: str
    ) -> Any:
        # The call's tokens, as the model wrote them: its JSON, word by word.
        tokens = sum(len(_words(json.dumps(c["function"]))) for c in calls)
        n = body["n"]
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n * tokens,
            "total_tokens": prompt_tokens + n * tokens,
        }
        if body.get("stream"):
            return StreamingResponse(
                stream_calls(calls, n, finish, usage, tokens), media_type="text/event-stream"
            )
        choices = [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning": None,
                    "tool_calls": calls,
                },
                "logprobs": None,
                "finish_reason": finish,
                "token_ids": list(range(tokens)),
            }
            for i in range(n)
        ]
        return {
            "id": "standin-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": state.model,
            "choices": choices,
            "usage": usage,
        }

    async def stream_calls(
        calls: list[dict[str, Any]], n: int, finish: str, usage: dict[str, int], tokens: int
    ) -> AsyncIterator[str]:
        for i in range(n):
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}}])
            for k, call in enumerate(calls):
                head = {
                    "index": k,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["function"]["name"]},
                }
                yield chunk([{"index": i, "delta": {"tool_calls": [head]}, "token_ids": [0]}])
                arguments = call["function"]["arguments"]
                half = len(arguments) // 2
                for piece in (arguments[:half], arguments[half:]):
                    delta = {"tool_calls": [{"index": k, "function": {"arguments": piece}}]}
                    yield chunk([{"index": i, "delta": delta, "token_ids": [0]}])
            rest = [0] * max(0, tokens - 3 * len(calls))
            yield chunk([{"index": i, "delta": {}, "token_ids": rest, "finish_reason": finish}])
        yield chunk([], usage=usage)
        yield "data: [DONE]\n\n"

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        payload = {"id": "standin-1", "model": state.model, "choices": choices, **extra}
        return f"data: {json.dumps(payload)}\n\n"

    async def stream(
        words: list[str], n: int, finish: str, usage: dict[str, int], chat: bool
    ) -> AsyncIterator[str]:

        # As vLLM with `return_token_ids`: the prompt's ids come with the first chunk, at the
        # top of a chat chunk and in the choice of a completion's.
        prompt_ids = list(range(usage["prompt_tokens"]))
        for i in range(n):
            if chat:
                role = {"index": i, "delta": {"role": "assistant", "content": ""}, "token_ids": []}
                yield chunk([role], **({"prompt_token_ids": prompt_ids} if i == 0 else {}))
            for j, word in enumerate(words):
                piece = word if j == 0 else f" {word}"
                last = j == len(words) - 1
                content: dict[str, Any] = {"delta": {"content": piece}} if chat else {"text": piece}
                if not chat and j == 0:
                    content["prompt_token_ids"] = prompt_ids
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
