"""One request's session on the vLLM backend: its calls, all on one replica, tagged with its id.

The bodies of the calls are built in `backends.vllm_requests` and their answers read in
`backends.vllm_responses`; this module sends them, on the session's replica
(`backends.vllm_replicas`).

A call vLLM did not process (refused or reset connection, 503, 429) is retried by the client
(`backends.vllm_client`); when another replica is free, it moves there at once, and the rest of
the session's calls move with it. Timeouts and dropped responses are never resent, since the call
may have run.

Router mode: with `--vllm.routing-header`, every call carries the request's routing key
(`backends.routing`: made by the server per request, never the client's) in that header, so a
router in front of vLLM (vllm-router, SGLang's model gateway, vLLM production-stack) keeps the
request's calls on one engine and its prefix cache; with `--vllm.affinity-header`, the value a
router sets in that response header is sent back on the request's later calls.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp

from backends.prompts import ChatPrompt, Prompt, SamplingParams, TextPrompt, TokenPrompt
from backends.results import Echo, Generation, PromptLogprobs, StreamEvent, Tokenized
from backends.routing import current_routing_key, new_routing_key
from backends.vllm_client import JSON, VLLMClient, events, loads
from backends.vllm_replicas import Replicas
from backends.vllm_requests import (
    echo_body,
    generation_request,
    prompt_logprobs_body,
    template_fields,
    tokenize_body,
)
from backends.vllm_responses import (
    integer,
    read_echo,
    read_generation,
    read_prompt_logprobs,
    read_stream,
    read_tokenized,
)

__all__ = ["VLLMSession"]


class VLLMSession:
    """One request's calls to vLLM, behind the `BackendSession` protocol."""

    def __init__(
        self,
        client: VLLMClient,
        replicas: Replicas,
        model_name: Callable[[], Awaitable[str]],
        *,
        request_id: str | None = None,
        deadline: float | None = None,
    ) -> None:
        self._client = client
        self._replicas = replicas
        self._url = replicas.next()
        self._model_name = model_name
        self._request_id = request_id
        self._deadline = deadline
        self._calls = itertools.count()
        settings = client.settings
        self._routing_header = settings.routing_header
        # The request's key, shared with every other session of the request (a judge's too).
        self._routing_key = current_routing_key() or new_routing_key()
        self._affinity_header = settings.affinity_header
        self._affinity: str | None = None

    @property
    def replica(self) -> str:
        """The replica this session's calls go to."""
        return self._url

    # Generation

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        path, body = generation_request(prompt, params, await self._model_name())
        return read_generation(await self._post(path, body), params)

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamEvent]:
        path, body = generation_request(prompt, params, await self._model_name(), stream=True)
        # Closed with this generator, at once: a caller that stops reading ends the request
        # (vLLM aborts a request whose connection closes).
        async with (
            contextlib.aclosing(self._sse(path, body)) as chunks,
            contextlib.aclosing(read_stream(chunks, params)) as stream,
        ):
            async for event in stream:
                yield event

    async def prompt_logprobs(self, prompt: Prompt, continuation: str) -> PromptLogprobs:
        prompt_text = await self.render(prompt)
        text = prompt_text + continuation
        body = prompt_logprobs_body(prompt, text, await self._model_name())
        return read_prompt_logprobs(await self._post("/v1/completions", body), prompt_text, text)

    async def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, TextPrompt):
            return prompt.text
        model = await self._model_name()
        tokenized = await self._post("/tokenize", {"model": model} | template_fields(prompt))
        detokenized = await self._post(
            "/detokenize", {"model": model, "tokens": tokenized["tokens"]}
        )
        return str(detokenized["prompt"])

    async def count_tokens(self, text: str) -> int:
        body = {"model": await self._model_name(), "prompt": text, "add_special_tokens": False}
        return integer(await self._post("/tokenize", body), "count")

    async def echo(self, prompt: TextPrompt | TokenPrompt, params: SamplingParams) -> Echo:
        # One call: vLLM echoes the prompt's tokens ahead of what it generates.
        body = echo_body(prompt, params, await self._model_name())
        return read_echo(await self._post("/v1/completions", body), params)

    async def tokenize(
        self, prompt: TextPrompt | ChatPrompt, add_special_tokens: bool, with_strings: bool
    ) -> Tokenized:
        model = await self._model_name()
        body = tokenize_body(prompt, model, add_special_tokens, with_strings)
        return read_tokenized(await self._post("/tokenize", body), with_strings)

    async def detokenize(self, ids: Sequence[int]) -> str:
        data = await self._post(
            "/detokenize", {"model": await self._model_name(), "tokens": list(ids)}
        )
        return str(data.get("prompt", ""))

    async def tokenizer_info(self) -> dict[str, Any]:
        # vLLM serves it only when started with --enable-tokenizer-info-endpoint.
        return await self._client.get(f"{self._url}/tokenizer_info")

    # HTTP

    def _call_headers(self) -> dict[str, str]:
        headers = {}
        if self._request_id is not None:
            # vLLM uses X-Request-Id as its engine request id, which must be unique among running
            # requests: each call gets its own, prefixed with the request's for tracing. Being
            # per call, it is no routing key (a router hashing it would scatter the request).
            headers["X-Request-Id"] = f"{self._request_id}-{next(self._calls)}"
        if self._routing_header:
            headers[self._routing_header] = self._routing_key
        if self._affinity_header and self._affinity is not None:
            headers[self._affinity_header] = self._affinity
        return headers

    async def _post(self, path: str, body: JSON) -> JSON:
        async with self._call(path, body) as response:
            return loads(await response.read())

    async def _sse(self, path: str, body: JSON) -> AsyncGenerator[JSON, None]:
        async with self._call(path, body) as response:
            async for chunk in events(response):
                yield chunk

    @contextlib.asynccontextmanager
    async def _call(self, path: str, body: JSON) -> AsyncIterator[aiohttp.ClientResponse]:
        route = _CallRoute(self)
        self._replicas.started(route.url)
        try:
            async with self._client.call(
                route, path, body, self._call_headers(), self._deadline
            ) as response:
                if self._affinity_header and self._affinity_header in response.headers:
                    self._affinity = response.headers[self._affinity_header]
                yield response
        finally:
            self._replicas.finished(route.url)


class _CallRoute:
    """One call's replica: the session's, until the call moves and the session with it."""

    def __init__(self, session: VLLMSession) -> None:
        self._session = session
        self.url = session._url

    def reroute(self, tried: Sequence[str], refused: bool) -> bool:
        replicas = self._session._replicas
        if refused:
            replicas.mark_down(self.url)
        other = replicas.other_than(tried)
        if other is None:
            return False
        replicas.finished(self.url)
        replicas.started(other)
        self.url = self._session._url = other
        return True
