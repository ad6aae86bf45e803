"""The vLLM backend: vLLM's OpenAI-compatible HTTP API over one pooled `httpx.AsyncClient`.

Calls used (vLLM's extensions to OpenAI's fields are marked *):
- `POST /v1/chat/completions`: chat prompts; continuation of an assistant turn with
  `continue_final_message`* and `add_generation_prompt`*=false.
- `POST /v1/completions`: raw prompts; `echo` with `logprobs` for scoring given text.
- `POST /tokenize`* and `POST /detokenize`*: rendering a chat template, counting tokens.
- `GET /v1/models`: readiness and discovery of the served model's name.
Every generation asks for `return_token_ids`* so each sample's token count is exact, and
`include_stop_str_in_output`* when the caller keeps stop strings.

With several replicas, `session()` pins one request's calls to one replica (its prefix cache
then serves shared prefixes) and successive sessions go round-robin over the replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx

from server.backends.base import (
    BackendResponseError,
    BackendUnavailable,
    ChatPrompt,
    Completion,
    FinishReason,
    Generation,
    Prompt,
    PromptScore,
    SamplingParams,
    StreamDelta,
    StreamEnd,
    StreamEvent,
    TextPrompt,
    TokenLogprob,
)
from server.backends.http import JSON, error_message, json_body, loads, map_httpx_errors

__all__ = ["VLLMBackend"]

logger = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 5.0
# How long a replica that refused a connection is left out of new sessions.
_DOWN_S = 10.0
# Errors raised before a request reaches the replica.
_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout)


class _Replicas:
    """The replica URLs, whose turn is next, which are down, and the served model's name."""

    def __init__(self, urls: Sequence[str], model: str | None) -> None:
        if not urls:
            raise ValueError("the vLLM backend needs at least one replica URL")
        self.urls = tuple(urls)
        self.model = model
        self._turn = itertools.cycle(self.urls)
        self._down_until: dict[str, float] = {}

    def next(self) -> str:
        """The next replica in turn that is not down; with all of them down, the next one."""
        now = time.monotonic()
        for _ in self.urls:
            url = next(self._turn)
            if self._down_until.get(url, 0.0) <= now:
                return url
        return next(self._turn)

    def mark_down(self, url: str) -> None:
        """Skip `url` in new sessions for a while: it refused a connection."""
        if self._down_until.get(url, 0.0) <= time.monotonic():
            logger.warning("vLLM replica %s is unreachable; skipping it for %.0f s", url, _DOWN_S)
        self._down_until[url] = time.monotonic() + _DOWN_S

    def other_than(self, tried: Sequence[str]) -> str | None:
        """A replica not tried yet, preferring those not marked down."""
        left = [url for url in self.urls if url not in tried]
        now = time.monotonic()
        up = [url for url in left if self._down_until.get(url, 0.0) <= now]
        return next(iter(up or left), None)


class VLLMBackend:
    """vLLM servers behind the `Backend` protocol."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        urls: Sequence[str],
        model: str | None = None,
        *,
        _replicas: _Replicas | None = None,
        _pinned: str | None = None,
        _request_id: str | None = None,
    ) -> None:
        self._client = client
        self._replicas = _replicas or _Replicas(urls, model)
        self._pinned = _pinned
        self._request_id = _request_id
        self._calls = itertools.count()

    async def model_name(self) -> str:
        if self._replicas.model is None:
            # The probe of every replica learns the name from the first that serves one.
            await self.check_ready()
        assert self._replicas.model is not None, "check_ready learns the model or raises"
        return self._replicas.model

    def session(self, request_id: str | None = None) -> VLLMBackend:
        return VLLMBackend(
            self._client,
            self._replicas.urls,
            _replicas=self._replicas,
            _pinned=self._replicas.next(),
            _request_id=request_id,
        )

    async def check_ready(self) -> None:
        # All replicas at once, each briefly: one hung replica must not hang the probe, and
        # one dead replica must not take the gateway out of service while others serve.
        probes = await asyncio.gather(
            *(self._probe(url) for url in self._replicas.urls), return_exceptions=True
        )
        problems = []
        for url, probe in zip(self._replicas.urls, probes, strict=True):
            if isinstance(probe, BaseException):
                problems.append(f"{url}: {probe}")
                if isinstance(probe, BackendUnavailable):
                    self._replicas.mark_down(url)
                continue
            if self._replicas.model is None and probe:
                self._replicas.model = probe[0]
            if self._replicas.model in probe:
                continue
            problems.append(f"{url} serves {probe}, not {self._replicas.model!r}")
        if len(problems) == len(self._replicas.urls):
            raise BackendUnavailable("no vLLM replica is ready: " + "; ".join(problems))
        for problem in problems:
            logger.warning("vLLM replica not ready: %s", problem)

    async def _probe(self, url: str) -> list[str]:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            return await self._served_models(url)

    async def aclose(self) -> None:
        await self._client.aclose()

    # Generation

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        path, body = await self._generation_request(prompt, params)
        data = await self._post(path, body)
        choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
        usage = data.get("usage") or {}
        completions = tuple(
            self._completion(choice, params, usage, len(choices)) for choice in choices
        )
        return Generation(completions, prompt_tokens=_int(usage, "prompt_tokens"))

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamEvent]:
        path, body = await self._generation_request(prompt, params)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        finish: dict[int, FinishReason] = {}
        tokens = [0] * params.n
        has_token_ids = False
        usage: JSON = {}
        async for chunk in self._sse(path, body):
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices", []):
                index = int(choice.get("index", 0))
                if "token_ids" in choice and choice["token_ids"] is not None:
                    has_token_ids = True
                    tokens[index] += len(choice["token_ids"])
                delta = _delta(choice, params)
                if delta.text or delta.logprobs or delta.reasoning:
                    yield delta
                if choice.get("finish_reason"):
                    finish[index] = _finish_reason(choice["finish_reason"])
        if not has_token_ids:
            tokens = self._split_usage(usage, params.n)
        yield StreamEnd(
            finish_reasons=tuple(finish.get(i, "length") for i in range(params.n)),
            prompt_tokens=_int(usage, "prompt_tokens"),
            completion_tokens=tuple(tokens),
        )

    async def score(self, prompt: Prompt, continuation: str) -> PromptScore:
        prompt_text = await self.render(prompt)
        text = prompt_text + continuation
        body: JSON = {
            "model": await self.model_name(),
            "prompt": text,
            "max_tokens": 1,
            "temperature": 0,
            "echo": True,
            "logprobs": 0,
            # A rendered chat template already holds its special tokens.
            "add_special_tokens": isinstance(prompt, TextPrompt),
        }
        data = await self._post("/v1/completions", body)
        prompt_tokens = _int(data.get("usage") or {}, "prompt_tokens")
        try:
            lp = data["choices"][0]["logprobs"]
            tokens, values, offsets = lp["tokens"], lp["token_logprobs"], lp["text_offset"]
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendResponseError(f"vLLM echo response lacks logprobs: {exc!r}") from exc
        # The echo covers the prompt's tokens, then the one generated token we discard. A token
        # belongs to the continuation when it ends past the prompt text.
        ends = [*offsets[1:prompt_tokens], len(text)]
        scored = tuple(
            TokenLogprob(tokens[i], float(values[i]))
            for i in range(prompt_tokens)
            if ends[i] > len(prompt_text) and values[i] is not None
        )
        return PromptScore(scored, prompt_tokens=prompt_tokens)

    async def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, TextPrompt):
            return prompt.text
        model = await self.model_name()
        tokenized = await self._post(
            "/tokenize",
            {
                "model": model,
                "messages": _messages(prompt),
                "add_generation_prompt": not prompt.continue_final_message,
                "continue_final_message": prompt.continue_final_message,
            },
        )
        detokenized = await self._post(
            "/detokenize", {"model": model, "tokens": tokenized["tokens"]}
        )
        return str(detokenized["prompt"])

    async def count_tokens(self, text: str) -> int:
        body = {"model": await self.model_name(), "prompt": text, "add_special_tokens": False}
        return _int(await self._post("/tokenize", body), "count")

    # Request building and parsing

    async def _generation_request(self, prompt: Prompt, params: SamplingParams) -> tuple[str, JSON]:
        body: JSON = {
            "model": await self.model_name(),
            "n": params.n,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "return_token_ids": True,
        }
        if params.stop:
            body["stop"] = list(params.stop)
            body["include_stop_str_in_output"] = params.include_stop
        if params.seed is not None:
            body["seed"] = params.seed
        if isinstance(prompt, ChatPrompt):
            body["messages"] = _messages(prompt)
            if prompt.continue_final_message:
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
            if params.logprobs is not None:
                body["logprobs"] = True
                body["top_logprobs"] = params.logprobs
            return "/v1/chat/completions", body
        body["prompt"] = prompt.text
        if params.logprobs is not None:
            body["logprobs"] = params.logprobs
        return "/v1/completions", body

    def _completion(
        self, choice: JSON, params: SamplingParams, usage: JSON, n_choices: int
    ) -> Completion:
        reasoning = None
        if "message" in choice:
            message = choice.get("message") or {}
            text = message.get("content") or ""
            reasoning = _reasoning(message)
        else:
            text = choice.get("text") or ""
        logprobs = _logprobs(choice.get("logprobs"))
        if choice.get("token_ids") is not None:
            tokens = len(choice["token_ids"])
        elif logprobs is not None:
            tokens = len(logprobs)
        else:
            tokens = self._split_usage(usage, n_choices)[0]
        return Completion(
            text=text,
            finish_reason=_finish_reason(choice.get("finish_reason")),
            tokens=tokens,
            logprobs=logprobs if params.logprobs is not None else None,
            reasoning=reasoning,
        )

    def _split_usage(self, usage: JSON, n: int) -> list[int]:
        # Without per-sample token ids only a single sample's count is exact.
        if n != 1:
            raise BackendResponseError(
                "vLLM returned no token_ids for n > 1; the gateway needs vLLM >= 0.10.2 "
                "(return_token_ids) to count each sample's tokens exactly"
            )
        return [_int(usage, "completion_tokens")]

    # HTTP

    def _url(self) -> str:
        return self._pinned or self._replicas.next()

    def _call_headers(self) -> dict[str, str]:
        # vLLM uses X-Request-Id as its engine request id, which must be unique among running
        # requests: each call of a request gets its own, prefixed with the request's for tracing.
        if self._request_id is None:
            return {}
        return {"X-Request-Id": f"{self._request_id}-{next(self._calls)}"}

    async def _served_models(self, url: str) -> list[str]:
        with map_httpx_errors(url):
            response = await self._client.get(f"{url}/v1/models", headers=self._call_headers())
        data = json_body(response, url)
        return [str(m["id"]) for m in data.get("data", []) if "id" in m]

    async def _post(self, path: str, body: JSON) -> JSON:
        async def send(url: str) -> httpx.Response:
            return await self._client.post(f"{url}{path}", json=body, headers=self._call_headers())

        url, response = await self._connect(send)
        return json_body(response, url)

    async def _sse(self, path: str, body: JSON) -> AsyncIterator[JSON]:
        async with contextlib.AsyncExitStack() as stack:

            async def send(url: str) -> httpx.Response:
                stream = self._client.stream(
                    "POST", f"{url}{path}", json=body, headers=self._call_headers()
                )
                return await stack.enter_async_context(stream)

            url, response = await self._connect(send)
            with map_httpx_errors(url):
                async for chunk in _events(response, url):
                    yield chunk

    async def _connect(
        self, send: Callable[[str], Awaitable[httpx.Response]]
    ) -> tuple[str, httpx.Response]:
        """`send` to the session's replica or, if it refuses the connection, to another one."""
        url, tried = self._url(), []
        while True:
            tried.append(url)
            with map_httpx_errors(url):
                try:
                    return url, await send(url)
                except _UNREACHABLE:
                    # The request never reached the replica, so another one may take it.
                    other = self._fail_over(url, tried)
                    if other is None:
                        raise
            url = other

    def _fail_over(self, url: str, tried: list[str]) -> str | None:
        """Another replica for a call that could not connect; the session moves with it."""
        self._replicas.mark_down(url)
        other = self._replicas.other_than(tried)
        if other is not None and self._pinned is not None:
            self._pinned = other
        return other


async def _events(response: httpx.Response, url: str) -> AsyncIterator[JSON]:
    """The JSON chunks of an SSE response up to `[DONE]`; an error chunk raises."""
    if response.status_code >= 400:
        await response.aread()
        json_body(response, url)
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            return
        chunk = loads(payload)
        if "error" in chunk or chunk.get("object") == "error":
            raise BackendResponseError(error_message(chunk))
        yield chunk


def _messages(prompt: ChatPrompt) -> list[JSON]:
    return [{"role": m.role, "content": m.content} for m in prompt.messages]


def _finish_reason(value: Any) -> FinishReason:
    return "length" if value == "length" else "stop"


def _int(data: JSON, key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int):
        raise BackendResponseError(f"vLLM response lacks an integer {key!r}")
    return value


def _delta(choice: JSON, params: SamplingParams) -> StreamDelta:
    reasoning = None
    if "delta" in choice:
        delta = choice.get("delta") or {}
        text = delta.get("content") or ""
        reasoning = _reasoning(delta)
    else:
        text = choice.get("text") or ""
    logprobs = _logprobs(choice.get("logprobs")) if params.logprobs is not None else None
    return StreamDelta(int(choice.get("index", 0)), text, logprobs, reasoning or "")


def _reasoning(message: JSON) -> str | None:
    """What a reasoning parser split off (`reasoning`; `reasoning_content` before vLLM 0.11)."""
    value = message.get("reasoning") or message.get("reasoning_content")
    return str(value) if value else None


def _logprobs(data: Any) -> tuple[TokenLogprob, ...] | None:
    """Both of vLLM's logprob shapes: chat's `content` list and completions' parallel lists."""
    if not isinstance(data, dict):
        return None
    try:
        if "content" in data:
            return tuple(
                TokenLogprob(
                    item["token"],
                    float(item["logprob"]),
                    tuple(
                        (t["token"], float(t["logprob"])) for t in item.get("top_logprobs") or ()
                    ),
                )
                for item in data["content"] or ()
            )
        tops = data.get("top_logprobs") or [None] * len(data["tokens"])
        return tuple(
            TokenLogprob(token, float(value), tuple((t, float(v)) for t, v in (top or {}).items()))
            for token, value, top in zip(data["tokens"], data["token_logprobs"], tops, strict=True)
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendResponseError(f"vLLM sent logprobs in an unexpected shape: {exc!r}") from exc
