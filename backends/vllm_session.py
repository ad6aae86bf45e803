"""One request's session on the vLLM backend: its calls, all on one replica, tagged with its id.

Calls used (vLLM's extensions to OpenAI's fields are marked *):
- `POST /v1/chat/completions`: chat prompts; continuation of an assistant turn with
  `continue_final_message`* and `add_generation_prompt`*=false; `tools`, `tool_choice` and
  `parallel_tool_calls` as OpenAI's, which vLLM parses calls for only when started with
  `--enable-auto-tool-choice --tool-call-parser <name>` (a forced choice needs neither).
- `POST /v1/completions`: raw prompts; `echo` with `logprobs` for the log-probabilities of
  given text.
- `POST /tokenize`* and `POST /detokenize`*: rendering a chat template, counting tokens.
Every generation asks for `return_token_ids`* so each sample's token count is exact, and
`include_stop_str_in_output`* when the caller keeps stop strings. A constrained output form goes
as `structured_outputs`* (`json` or `json_object`), the sampling fields as vLLM names them
(`top_k`*, `min_p`*, `repetition_penalty`*, `stop_token_ids`* among them).

A call vLLM did not process (refused or reset connection, 503, 429) is retried by the client
(`backends.vllm_client`); when another replica is free, it moves there at once, and the rest of the
session's calls move with it. Timeouts and dropped responses are never resent, since the call
may have run.

Router mode: with `--vllm.routing-header`, every call carries the request id in that header, so
a router in front of vLLM (SGLang's model gateway, vLLM production-stack, llm-d) keeps the
request's calls on one replica and its prefix cache; with `--vllm.affinity-header`, the value a
router sets in that response header is sent back on the request's later calls.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp

from backends.errors import BackendResponseError
from backends.prompts import (
    ChatPrompt,
    Prompt,
    SamplingParams,
    TextPrompt,
    TokenPrompt,
    ToolCall,
    Tools,
)
from backends.results import (
    Completion,
    Echo,
    FinishReason,
    Generation,
    PromptLogprobs,
    PromptToken,
    StreamDelta,
    StreamEnd,
    StreamEvent,
    Tokenized,
    TokenLogprob,
    ToolCallDelta,
)
from backends.vllm_client import JSON, VLLMClient, loads, stream_error

if TYPE_CHECKING:
    from backends.vllm import Replicas

__all__ = ["VLLMSession"]


# Sampling fields vLLM takes as they are, with the value that leaves sampling unchanged.
_SAMPLING_EXTRAS: dict[str, float] = {
    "top_k": 0,
    "min_p": 0.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "repetition_penalty": 1.0,
}


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
        self._affinity_header = settings.affinity_header
        self._affinity: str | None = None

    @property
    def replica(self) -> str:
        """The replica this session's calls go to."""
        return self._url

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
        # Tokens not yet passed on, per completion, and the prompt's, until the first delta
        # carries them (`return_token_ids` puts the prompt's ids in the first chunk).
        unsaid = [0] * params.n
        prompt_count: int | None = 0
        has_token_ids = False
        usage: JSON = {}
        # Closed with this generator, at once: a caller that stops reading ends the request
        # (vLLM aborts a request whose connection closes).
        async with contextlib.aclosing(self._sse(path, body)) as chunks:
            async for chunk in chunks:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                if prompt_count is not None and chunk.get("prompt_token_ids"):
                    prompt_count = len(chunk["prompt_token_ids"])
                for choice in chunk.get("choices", []):
                    index = int(choice.get("index", 0))
                    if (ids := choice.get("token_ids")) is not None:
                        has_token_ids = True
                        tokens[index] += len(ids)
                        unsaid[index] += len(ids)
                    if prompt_count is not None and choice.get("prompt_token_ids"):
                        prompt_count = len(choice["prompt_token_ids"])
                    delta = _delta(choice, params, unsaid[index], prompt_count or 0)
                    if delta.text or delta.logprobs or delta.reasoning or delta.tool_calls:
                        unsaid[index] = 0
                        if prompt_count:
                            prompt_count = None  # told
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

    async def prompt_logprobs(self, prompt: Prompt, continuation: str) -> PromptLogprobs:
        prompt_text = await self.render(prompt)
        text = prompt_text + continuation
        body: JSON = {
            "model": await self._model_name(),
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
        return PromptLogprobs(scored, prompt_tokens=prompt_tokens)

    async def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, TextPrompt):
            return prompt.text
        model = await self._model_name()
        body: JSON = {
            "model": model,
            "messages": _messages(prompt),
            "add_generation_prompt": not prompt.continue_final_message,
            "continue_final_message": prompt.continue_final_message,
        }
        if prompt.tools is not None:
            body["tools"] = _tools_fields(prompt.tools)["tools"]
        tokenized = await self._post("/tokenize", body)
        detokenized = await self._post(
            "/detokenize", {"model": model, "tokens": tokenized["tokens"]}
        )
        return str(detokenized["prompt"])

    async def count_tokens(self, text: str) -> int:
        body = {"model": await self._model_name(), "prompt": text, "add_special_tokens": False}
        return _int(await self._post("/tokenize", body), "count")

    async def echo(self, prompt: TextPrompt | TokenPrompt, params: SamplingParams) -> Echo:
        # One call: vLLM echoes the prompt's tokens with their log-probabilities ahead of what
        # it generates. It generates at least one token; for max_tokens 0 that one is dropped.
        body = await self._sampling_body(params, max(1, params.max_tokens))
        body["prompt"] = prompt.text if isinstance(prompt, TextPrompt) else list(prompt.ids)
        body |= {"echo": True, "logprobs": params.logprobs or 0}
        data = await self._post("/v1/completions", body)
        prompt_tokens = _int(data.get("usage") or {}, "prompt_tokens")
        choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != params.n:
            raise BackendResponseError(f"vLLM answered {len(choices)} choices for n={params.n}")
        echoed = [_echoed(choice, prompt_tokens) for choice in choices]
        text, tokens, _ = echoed[0]
        completions = tuple(
            _generated(choice, generated, params)
            for choice, (_, _, generated) in zip(choices, echoed, strict=True)
        )
        return Echo(text, tokens, Generation(completions, prompt_tokens=prompt_tokens))

    async def tokenize(
        self, prompt: TextPrompt | ChatPrompt, add_special_tokens: bool, with_strings: bool
    ) -> Tokenized:
        body: JSON = {"model": await self._model_name(), "return_token_strs": with_strings}
        if isinstance(prompt, TextPrompt):
            body |= {"prompt": prompt.text, "add_special_tokens": add_special_tokens}
        else:
            body |= {
                "messages": _messages(prompt),
                "add_generation_prompt": not prompt.continue_final_message,
                "continue_final_message": prompt.continue_final_message,
                "add_special_tokens": add_special_tokens,
            }
            if prompt.tools is not None:
                body["tools"] = _tools_fields(prompt.tools)["tools"]
        data = await self._post("/tokenize", body)
        strings = data.get("token_strs")
        return Tokenized(
            tuple(int(i) for i in data.get("tokens") or ()),
            _int(data, "max_model_len"),
            tuple(strings) if with_strings and isinstance(strings, list) else None,
        )

    async def detokenize(self, ids: Sequence[int]) -> str:
        data = await self._post(
            "/detokenize", {"model": await self._model_name(), "tokens": list(ids)}
        )
        return str(data.get("prompt", ""))

    async def tokenizer_info(self) -> dict[str, Any]:
        # vLLM serves it only when started with --enable-tokenizer-info-endpoint.
        return await self._client.get(f"{self._url}/tokenizer_info")

    # Request building and parsing

    async def _generation_request(self, prompt: Prompt, params: SamplingParams) -> tuple[str, JSON]:
        body = await self._sampling_body(params, params.max_tokens)
        if isinstance(prompt, ChatPrompt):
            body["messages"] = _messages(prompt)
            if prompt.tools is not None:
                # vLLM renders them with the model's template and parses the calls back out
                # (--enable-auto-tool-choice --tool-call-parser); a forced choice it enforces.
                body |= _tools_fields(prompt.tools)
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

    async def _sampling_body(self, params: SamplingParams, max_tokens: int) -> JSON:
        """The fields of a generation call that say what to sample."""
        body: JSON = {
            "model": await self._model_name(),
            "n": params.n,
            "max_tokens": max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "return_token_ids": True,
        }
        if params.stop:
            body["stop"] = list(params.stop)
            body["include_stop_str_in_output"] = params.include_stop
        if params.seed is not None:
            body["seed"] = params.seed
        if params.structured is not None:
            # vLLM's own field, taken alike by both endpoints (its `response_format` becomes it).
            schema = params.structured.json_schema
            body["structured_outputs"] = (
                {"json_object": True} if schema is None else {"json": schema}
            )
        # Neutral values stay off the wire, so a request that sets none reads as it always did.
        for name, neutral in _SAMPLING_EXTRAS.items():
            value = getattr(params, name)
            if value != neutral:
                body[name] = value
        if params.logit_bias:
            body["logit_bias"] = {str(token): bias for token, bias in params.logit_bias}
        if params.stop_token_ids:
            body["stop_token_ids"] = list(params.stop_token_ids)
        return body

    def _completion(
        self, choice: JSON, params: SamplingParams, usage: JSON, n_choices: int
    ) -> Completion:
        text, reasoning = _text(choice, "message")
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
            reasoning=reasoning or None,
            tool_calls=_tool_calls(choice.get("message") or {}),
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

    def _call_headers(self) -> dict[str, str]:
        if self._request_id is None:
            return {}
        # vLLM uses X-Request-Id as its engine request id, which must be unique among running
        # requests: each call of a request gets its own, prefixed with the request's for tracing.
        headers = {"X-Request-Id": f"{self._request_id}-{next(self._calls)}"}
        if self._routing_header:
            headers[self._routing_header] = self._request_id
        if self._affinity_header and self._affinity is not None:
            headers[self._affinity_header] = self._affinity
        return headers

    async def _post(self, path: str, body: JSON) -> JSON:
        async with self._call(path, body) as response:
            return loads(await response.read())

    async def _sse(self, path: str, body: JSON) -> AsyncGenerator[JSON, None]:
        async with self._call(path, body) as response:
            async for chunk in _events(response):
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


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[JSON]:
    """The JSON chunks of an SSE response up to `[DONE]`; an error chunk raises."""
    async for line in response.content:
        if not line.startswith(b"data:"):
            continue
        payload = line[len(b"data:") :].strip()
        if payload == b"[DONE]":
            return
        chunk = loads(payload)
        if "error" in chunk or chunk.get("object") == "error":
            raise stream_error(chunk)
        yield chunk


def _echoed(choice: JSON, prompt_tokens: int) -> tuple[str, tuple[PromptToken, ...], slice]:
    """A choice's echoed prompt: its text and scored tokens, and where the generated part of
    the logprob lists starts."""
    try:
        lp = choice["logprobs"]
        tokens, values, tops, offsets = (
            lp["tokens"],
            lp["token_logprobs"],
            lp.get("top_logprobs") or [None] * len(lp["tokens"]),
            lp["text_offset"],
        )
        text = str(choice.get("text") or "")
        end = offsets[prompt_tokens] if len(offsets) > prompt_tokens else len(text)
        scored = tuple(
            PromptToken(
                str(tokens[i]),
                None if values[i] is None else float(values[i]),
                tuple((str(t), float(v)) for t, v in (tops[i] or {}).items()),
                int(offsets[i]),
            )
            for i in range(prompt_tokens)
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise BackendResponseError(f"vLLM echo response lacks logprobs: {exc!r}") from exc
    return text[:end], scored, slice(prompt_tokens, None)


def _generated(choice: JSON, part: slice, params: SamplingParams) -> Completion:
    """What a choice generated after its echoed prompt; nothing when max_tokens is 0."""
    lp = choice["logprobs"]
    if params.max_tokens == 0:
        return Completion("", "length", 0, () if params.logprobs is not None else None)
    offsets = lp["text_offset"][part]
    text = str(choice.get("text") or "")
    start = offsets[0] if offsets else len(text)
    tokens = lp["tokens"][part]
    logprobs = tuple(
        TokenLogprob(
            str(token),
            float(value),
            tuple((str(t), float(v)) for t, v in (top or {}).items()),
        )
        for token, value, top in zip(
            tokens,
            lp["token_logprobs"][part],
            (lp.get("top_logprobs") or [None] * len(lp["tokens"]))[part],
            strict=True,
        )
    )
    return Completion(
        text=text[start:],
        finish_reason=_finish_reason(choice.get("finish_reason")),
        tokens=len(tokens),
        logprobs=logprobs if params.logprobs is not None else None,
    )


def _messages(prompt: ChatPrompt) -> list[JSON]:
    return [m.as_dict() for m in prompt.messages]


def _tools_fields(tools: Tools) -> JSON:
    """`tools`, `tool_choice` and `parallel_tool_calls` as OpenAI's (and vLLM's) API takes them."""
    functions = []
    for tool in tools.functions:
        function: JSON = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        if tool.parameters is not None:
            function["parameters"] = tool.parameters
        if tool.strict is not None:
            function["strict"] = tool.strict
        functions.append({"type": "function", "function": function})
    choice: Any = tools.choice
    if not isinstance(choice, str):
        choice = {"type": "function", "function": {"name": choice.name}}
    return {"tools": functions, "tool_choice": choice, "parallel_tool_calls": tools.parallel}


def _tool_calls(message: JSON) -> tuple[ToolCall, ...]:
    """The calls vLLM's tool parser found in a message."""
    try:
        return tuple(
            ToolCall(
                str(call.get("id") or ""),
                str(call["function"]["name"]),
                str(call["function"].get("arguments") or ""),
            )
            for call in message.get("tool_calls") or ()
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise BackendResponseError(f"vLLM sent tool_calls in an unexpected shape: {exc!r}") from exc


def _tool_call_deltas(delta: JSON) -> tuple[ToolCallDelta, ...]:
    """The pieces of tool calls in a stream chunk's delta."""
    try:
        pieces = []
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            pieces.append(
                ToolCallDelta(
                    int(call.get("index", 0)),
                    call.get("id"),
                    function.get("name"),
                    function.get("arguments") or "",
                )
            )
        return tuple(pieces)
    except (TypeError, AttributeError, ValueError) as exc:
        raise BackendResponseError(
            f"vLLM streamed tool_calls in an unexpected shape: {exc!r}"
        ) from exc


def _finish_reason(value: Any) -> FinishReason:
    if value == "length":
        return "length"
    return "tool_calls" if value == "tool_calls" else "stop"


def _int(data: JSON, key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int):
        raise BackendResponseError(f"vLLM response lacks an integer {key!r}")
    return value


def _delta(choice: JSON, params: SamplingParams, tokens: int, prompt_tokens: int) -> StreamDelta:
    text, reasoning = _text(choice, "delta")
    logprobs = _logprobs(choice.get("logprobs")) if params.logprobs is not None else None
    calls = _tool_call_deltas(choice.get("delta") or {})
    index = int(choice.get("index", 0))
    return StreamDelta(index, text, logprobs, reasoning, calls, tokens, prompt_tokens)


def _text(choice: JSON, chat_key: str) -> tuple[str, str]:
    """A choice's text and the reasoning a reasoning parser split off it: chat choices carry
    both in `message` (or a chunk's `delta`), text completions only `text`. The reasoning is
    `reasoning`, or `reasoning_content` before vLLM 0.11."""
    if chat_key not in choice:
        return choice.get("text") or "", ""
    message = choice.get(chat_key) or {}
    reasoning = message.get("reasoning") or message.get("reasoning_content")
    return message.get("content") or "", str(reasoning) if reasoning else ""


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
