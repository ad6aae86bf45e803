"""Builders shared by the tests."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
from openai.types.chat import ChatCompletionToolParam
from openai.types.responses import FunctionToolParam

from backends.base import Backend, ChatMessage, ChatPrompt, SamplingParams
from backends.vllm import VLLMBackendSettings
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


def tool_call_text(name: str, arguments: Mapping[str, Any] | str) -> str:
    """A call as the scripted (and embedded) model writes it: a Hermes-style block; `arguments`
    as given when a string (JSON or not)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return f'<tool_call>{{"name": "{name}", "arguments": {args}}}</tool_call>'


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


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def vllm_urls(settings: Settings) -> list[str]:
    """The replica URLs the settings give the vLLM backend (its part joins from the registry)."""
    assert isinstance(settings, VLLMBackendSettings)
    return settings.vllm_url
