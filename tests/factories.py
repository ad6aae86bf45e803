"""Builders shared by the tests."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionChunk, ChatCompletionToolParam
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall
from openai.types.responses import FunctionToolParam
from openai.types.shared_params import FunctionDefinition

from backends.base import Backend, ChatMessage, ChatPrompt, SamplingParams
from backends.vllm import VLLMBackendSettings
from bench.processes import free_port as free_port
from server.app import create_app
from server.settings import LimitsSettings, Settings
from strategies.base import StrategyRequest
from strategies.limits import Limits
from verifiers.base import Candidate, CandidateScore, Scores, VerifierError

SCRIPTED_MODEL = "scripted-model"


def chat_request(text: str = "What is 2 + 2?", **sampling: Any) -> StrategyRequest:
    """A one-turn chat request with the given sampling fields."""
    sampling.setdefault("max_tokens", 64)
    return StrategyRequest(ChatPrompt((ChatMessage("user", text),)), SamplingParams(**sampling))


class TableVerifier:
    """A verifier that scores by table: candidate text to score (or to step scores)."""

    def __init__(
        self,
        table: Mapping[str, float | tuple[float, ...]],
        *,
        logprobs: int | None = None,
        error: VerifierError | None = None,
        tokens_per_candidate: int = 10,
    ) -> None:
        self.table = table
        self._logprobs = logprobs
        self.error = error
        self.tokens_per_candidate = tokens_per_candidate
        self.calls: list[tuple[str, list[Candidate]]] = []

    @property
    def logprobs(self) -> int | None:
        return self._logprobs

    async def score(self, question: str, candidates: Sequence[Candidate]) -> Scores:
        self.calls.append((question, list(candidates)))
        if self.error is not None:
            raise self.error
        scored = []
        for candidate in candidates:
            value = self.table[candidate.text]
            if isinstance(value, tuple):
                scored.append(CandidateScore(value[-1], value))
            else:
                scored.append(CandidateScore(value))
        return Scores(tuple(scored), tokens=self.tokens_per_candidate * len(scored))


def chat_body(content: str = "What is 2 + 2?", /, **fields: Any) -> dict[str, Any]:
    """A `/v1/chat/completions` body for the scripted model."""
    return {
        "model": SCRIPTED_MODEL,
        "messages": [{"role": "user", "content": content}],
        **fields,
    }


@contextlib.asynccontextmanager
async def app_client(
    backend: Backend,
    limits: Limits | None = None,
    raise_app_exceptions: bool = True,
    settings: Settings | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client wired straight to an app (lifespan included) around `backend`.

    With `raise_app_exceptions=False` an unhandled error comes back as the 500 a client gets.
    """
    ceilings = limits.model_dump(exclude_unset=True) if limits is not None else {}
    settings = settings or Settings(limits=LimitsSettings(**ceilings))
    app = create_app(settings, backend=backend)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


@contextlib.asynccontextmanager
async def sdk_client(
    backend: Backend, settings: Settings | None = None
) -> AsyncIterator[openai.AsyncOpenAI]:
    """The openai SDK's own client (its HTTP client is httpx2's since openai 3), wired straight
    to an app (lifespan included) around `backend`."""
    app = create_app(settings or Settings(), backend=backend)
    async with app.router.lifespan_context(app):
        http = openai.DefaultAsyncHttpxClient(transport=httpx2.ASGITransport(app=app))
        async with openai.AsyncOpenAI(
            base_url="http://gateway/v1", api_key="x", http_client=http, max_retries=0
        ) as sdk:
            yield sdk


@contextlib.asynccontextmanager
async def gateway_client(url: str, **options: Any) -> AsyncIterator[openai.AsyncOpenAI]:
    """The openai SDK's client of the gateway at `url`, with no retries unless given."""
    async with openai.AsyncOpenAI(
        base_url=f"{url}/v1", **{"api_key": "x", "max_retries": 0, **options}
    ) as client:
        yield client


@dataclasses.dataclass
class StreamedCalls:
    """What a streamed chat completion said of its tool calls: the call pieces in order, the
    last finish reason and the usage."""

    pieces: list[ChoiceDeltaToolCall]
    finish: str | None
    usage: CompletionUsage | None

    @property
    def arguments(self) -> str:
        """The pieces' arguments, joined."""
        return "".join(p.function.arguments or "" for p in self.pieces if p.function)


async def streamed_calls(stream: AsyncIterable[ChatCompletionChunk]) -> StreamedCalls:
    """Read a streamed chat completion through, gathering its tool calls."""
    read = StreamedCalls([], None, None)
    async for chunk in stream:
        read.usage = chunk.usage or read.usage
        for choice in chunk.choices:
            read.pieces += choice.delta.tool_calls or []
            read.finish = choice.finish_reason or read.finish
    return read


def tool_call_text(name: str, arguments: Mapping[str, Any] | str) -> str:
    """A call as the scripted (and embedded) model writes it: a Hermes-style block; `arguments`
    as given when a string (JSON or not)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return f'<tool_call>{{"name": "{name}", "arguments": {args}}}</tool_call>'


def function_tool(
    name: str,
    description: str | None = None,
    properties: Mapping[str, Any] | None = None,
    required: Sequence[str] = (),
    is_closed: bool = False,
) -> ChatCompletionToolParam:
    """A chat completion's function tool; with `properties`, its parameters are an object of
    them (`is_closed`: no other properties)."""
    function: FunctionDefinition = {"name": name}
    if description is not None:
        function["description"] = description
    if properties is not None:
        parameters: dict[str, Any] = {"type": "object", "properties": dict(properties)}
        parameters["required"] = list(required)
        if is_closed:
            parameters["additionalProperties"] = False
        function["parameters"] = parameters
    return {"type": "function", "function": function}


# The tests' tools: a weather lookup with one optional argument, and a tool with no parameters.
WEATHER = function_tool(
    "get_weather",
    "The weather in a city",
    {"city": {"type": "string"}, "days": {"type": "integer"}},
    required=["city"],
)
TIME = function_tool("get_time")


def flat_tool(tool: ChatCompletionToolParam, strict: bool | None = None) -> FunctionToolParam:
    """A chat completion's function tool as the Responses API takes it: flat."""
    function = tool["function"]
    return {
        "type": "function",
        "name": function["name"],
        "description": function.get("description"),
        "parameters": dict(function.get("parameters") or {}),
        "strict": strict,
    }


def node_report(script: str, gateway: str, model: str) -> Any:
    """What a Node client script of tests/node (`make install-node`) printed, as JSON, after
    running it against the gateway at `gateway`."""
    path = Path(__file__).parent / "node" / script
    done = subprocess.run(
        ["node", str(path), f"{gateway}/v1", model], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def sse_events(body: str) -> list[Any]:
    """The `data:` payloads of a Server-Sent Events body, JSON-decoded except `[DONE]`."""
    events: list[Any] = []
    for line in body.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def vllm_urls(settings: Settings) -> list[str]:
    """The replica URLs the settings give the vLLM backend (its part joins from the registry)."""
    assert isinstance(settings, VLLMBackendSettings)
    return settings.vllm_url


def http_scope(path: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> dict[str, Any]:
    """The ASGI scope of a `POST path` with a JSON body, for a test that drives an app's
    `receive` and `send` itself (a body that stalls, a client that leaves mid-stream)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"host", b"gateway"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
