"""A slow stream stays alive (SSE comments) and, when asked, reports progress before answering."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import httpx2
import openai
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from pydantic_settings import CliApp

from backends.scripted import ScriptedBackend
from server.app import create_app
from server.metrics import Metrics
from server.protocol.chat import ChatCompletionRequest
from server.serving.chat import ChatRendering
from server.serving.running import Serving
from server.settings import Settings
from strategies.base import Choice, NoParams, StrategyParams, StrategyRequest, StrategyResult
from strategies.context import StrategyContext
from strategies.limits import Limits
from tests.factories import SCRIPTED_MODEL, app_client, chat_body, sse_events

KEEPALIVE = ": keep-alive\n\n"
VOTE = {"reasoning_strategy": "majority_vote", "reasoning_params": {"n": 2}}


def test_the_keepalive_interval_is_a_flag() -> None:
    assert Settings().stream_keepalive_s == 10.0
    settings = CliApp.run(Settings, cli_args=["--stream-keepalive-s", "2.5"])
    assert settings.stream_keepalive_s == 2.5
    with pytest.raises(ValidationError, match="stream_keepalive_s"):
        Settings(stream_keepalive_s=0)


async def test_a_slow_vote_sends_comments_until_it_answers() -> None:
    # The backend takes many keep-alive intervals to answer.
    settings = Settings(stream_keepalive_s=0.05)
    backend = ScriptedBackend(["it is 4"], delay_s=0.5)
    async with app_client(backend, settings=settings) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(stream=True, **VOTE))
    body = response.text
    # Between the opening chunk and the answer, nothing but comments.
    opening, rest = body.split("\n\n", 1)
    assert opening.startswith("data: ")
    assert rest.startswith(KEEPALIVE * 2)
    assert KEEPALIVE not in rest[rest.index('"content":"it is 4"') :]
    events = sse_events(body)
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]) == "it is 4"
    assert events[-1] == "[DONE]"


class Recording(httpx2.AsyncBaseTransport):
    """Passes requests on, and keeps each response's raw body (in the HTTP library the openai
    client is built on)."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner
        self.bodies: list[str] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        self.bodies.append(body.decode())
        return httpx2.Response(response.status_code, headers=response.headers, content=body)


async def test_the_openai_client_reads_through_the_comments() -> None:
    settings = Settings(stream_keepalive_s=0.05)
    app = create_app(settings, backend=ScriptedBackend(["it is 4"], delay_s=0.5))
    transport = Recording(httpx2.ASGITransport(app=app))
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(transport=transport) as http,
        openai.AsyncOpenAI(
            base_url="http://gateway/v1", api_key="unused", http_client=http, max_retries=0
        ) as client,
    ):
        stream = await client.chat.completions.create(
            model=SCRIPTED_MODEL,
            messages=[{"role": "user", "content": "What is 2 + 2?"}],
            stream=True,
            extra_body=VOTE,
        )
        chunks = [chunk async for chunk in stream]
    (raw,) = transport.bodies
    assert KEEPALIVE in raw
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "it is 4"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_progress_lines_come_as_reasoning_before_the_answer() -> None:
    texts = ["it is 4", "so 5", "4", "4"]
    fields = {
        "reasoning_strategy": "majority_vote",
        "reasoning_params": {"n": 4, "stream_progress": True},
    }
    async with app_client(ScriptedBackend(texts)) as client:
        streamed = await client.post("/v1/chat/completions", json=chat_body(stream=True, **fields))
        plain = await client.post("/v1/chat/completions", json=chat_body(**fields))
    deltas = [e["choices"][0]["delta"] for e in sse_events(streamed.text)[:-1] if e["choices"]]
    reasoning = [d["reasoning"] for d in deltas if "reasoning" in d]
    assert reasoning == ["sampled 4 of 4; leading answer 4 with 3 of 4 votes\n"]
    first_content = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert all("reasoning" not in d for d in deltas[first_content:])
    assert all(not d.get("content") for d in deltas[:first_content])
    assert "".join(d.get("content") or "" for d in deltas) == "it is 4"
    # Without a stream the param changes nothing.
    assert plain.status_code == 200
    message = plain.json()["choices"][0]["message"]
    assert message["content"] == "it is 4" and message.get("reasoning") is None


async def test_progress_lines_on_the_completions_endpoint() -> None:
    body = {
        "model": SCRIPTED_MODEL,
        "prompt": "2 + 2 =",
        "stream": True,
        "reasoning_strategy": "majority_vote",
        "reasoning_params": {"n": 2, "stream_progress": True},
    }
    async with app_client(ScriptedBackend(["4", "5"])) as client:
        response = await client.post("/v1/completions", json=body)
    choices = [e["choices"][0] for e in sse_events(response.text)[:-1] if e["choices"]]
    assert [c["reasoning"] for c in choices if c.get("reasoning")] == [
        "sampled 2 of 2; leading answer 4 with 1 of 2 votes\n"
    ]
    assert "".join(c["text"] for c in choices) == "4"


class ReasonsAtTheEnd:
    """A strategy that reports progress, then answers with a reasoned choice."""

    name: ClassVar[str] = "none"
    takes_tools: ClassVar[bool] = True
    takes_json: ClassVar[bool] = True
    takes_thinking: ClassVar[bool] = False
    params_model: ClassVar[type[StrategyParams]] = NoParams

    async def run(
        self, request: StrategyRequest, params: NoParams, ctx: StrategyContext
    ) -> StrategyResult:
        await ctx.progress("thinking")
        return StrategyResult((Choice("4", "stop", 1, reasoning="2 + 2"),), ctx.usage)


@pytest.mark.parametrize(("progress", "reasoning"), [(True, ["thinking\n"]), (False, ["2 + 2"])])
async def test_after_progress_the_chosen_reasoning_is_not_sent_again(
    progress: bool, reasoning: list[str]
) -> None:
    serving = Serving(ScriptedBackend(["x"]), Limits(), Metrics(CollectorRegistry()))
    body = ChatCompletionRequest.model_validate(chat_body(stream=True))
    prepared = await serving.prepare(body, "chatcmpl-1")
    prepared = dataclasses.replace(prepared, strategy=ReasonsAtTheEnd(), stream_progress=progress)
    rendering = ChatRendering("chatcmpl-1", SCRIPTED_MODEL, False)
    text = "".join([event async for event in serving.stream(prepared, rendering)])
    deltas: list[dict[str, Any]] = [
        e["choices"][0]["delta"] for e in sse_events(text)[:-1] if e["choices"]
    ]
    assert [d["reasoning"] for d in deltas if "reasoning" in d] == reasoning
    assert "".join(d.get("content") or "" for d in deltas) == "4"
