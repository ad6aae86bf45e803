"""What a vLLM server's answers mean: completions, stream chunks, echoed prompts and token ids,
as the backend's result types.

Counts are exact: each sample's tokens come from the `token_ids` vLLM returns (`return_token_ids`),
never from an estimate. An answer in a shape we cannot read is a `BackendResponseError`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from backends.errors import BackendResponseError
from backends.prompts import SamplingParams, ToolCall
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
from backends.vllm_client import JSON

__all__ = [
    "integer",
    "read_echo",
    "read_generation",
    "read_prompt_logprobs",
    "read_stream",
    "read_tokenized",
]


def read_generation(data: JSON, params: SamplingParams) -> Generation:
    """The completions of a chat or text completions answer, in index order."""
    choices = _choices(data)
    usage = data.get("usage") or {}
    completions = tuple(_completion(choice, params, usage, len(choices)) for choice in choices)
    return Generation(completions, prompt_tokens=integer(usage, "prompt_tokens"))


async def read_stream(
    chunks: AsyncIterator[JSON], params: SamplingParams
) -> AsyncGenerator[StreamEvent, None]:
    """The events of a streamed answer's chunks, ending with `StreamEnd`."""
    finish: dict[int, FinishReason] = {}
    tokens = [0] * params.n
    # Tokens not yet passed on, per completion, and the prompt's, until the first delta
    # carries them (`return_token_ids` puts the prompt's ids in the first chunk).
    unsaid = [0] * params.n
    prompt_count: int | None = 0
    has_token_ids = False
    usage: JSON = {}
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
        tokens = _split_usage(usage, params.n)
    yield StreamEnd(
        finish_reasons=tuple(finish.get(i, "length") for i in range(params.n)),
        prompt_tokens=integer(usage, "prompt_tokens"),
        completion_tokens=tuple(tokens),
    )


def read_prompt_logprobs(data: JSON, prompt_text: str, text: str) -> PromptLogprobs:
    """The log-probabilities of the tokens of `text` past `prompt_text`, from the echo of
    `prompt_logprobs_body`."""
    prompt_tokens = integer(data.get("usage") or {}, "prompt_tokens")
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


def read_echo(data: JSON, params: SamplingParams) -> Echo:
    """The scored prompt and the completions after it, from the answer to `echo_body`."""
    prompt_tokens = integer(data.get("usage") or {}, "prompt_tokens")
    choices = _choices(data)
    if len(choices) != params.n:
        raise BackendResponseError(f"vLLM answered {len(choices)} choices for n={params.n}")
    echoed = [_echoed(choice, prompt_tokens) for choice in choices]
    text, tokens, _ = echoed[0]
    completions = tuple(
        _generated(choice, generated, params)
        for choice, (_, _, generated) in zip(choices, echoed, strict=True)
    )
    return Echo(text, tokens, Generation(completions, prompt_tokens=prompt_tokens))


def read_tokenized(data: JSON, with_strings: bool) -> Tokenized:
    """The token ids (and their strings, when asked) of a `/tokenize` answer."""
    strings = data.get("token_strs")
    return Tokenized(
        tuple(int(i) for i in data.get("tokens") or ()),
        integer(data, "max_model_len"),
        tuple(strings) if with_strings and isinstance(strings, list) else None,
    )


def integer(data: JSON, key: str) -> int:
    """The integer field `key` of an answer; a missing one is a malformed answer."""
    value = data.get(key)
    if not isinstance(value, int):
        raise BackendResponseError(f"vLLM response lacks an integer {key!r}")
    return value


def _choices(data: JSON) -> list[JSON]:
    return sorted(data.get("choices", []), key=lambda c: c.get("index", 0))


def _completion(choice: JSON, params: SamplingParams, usage: JSON, n_choices: int) -> Completion:
    text, reasoning = _text(choice, "message")
    logprobs = _logprobs(choice.get("logprobs"))
    if choice.get("token_ids") is not None:
        tokens = len(choice["token_ids"])
    elif logprobs is not None:
        tokens = len(logprobs)
    else:
        tokens = _split_usage(usage, n_choices)[0]
    return Completion(
        text=text,
        finish_reason=_finish_reason(choice.get("finish_reason")),
        tokens=tokens,
        logprobs=logprobs if params.logprobs is not None else None,
        reasoning=reasoning or None,
        tool_calls=_tool_calls(choice.get("message") or {}),
    )


def _split_usage(usage: JSON, n: int) -> list[int]:
    # Without per-sample token ids only a single sample's count is exact.
    if n != 1:
        raise BackendResponseError(
            "vLLM returned no token_ids for n > 1; the gateway needs vLLM >= 0.10.2 "
            "(return_token_ids) to count each sample's tokens exactly"
        )
    return [integer(usage, "completion_tokens")]


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
                _top(tops[i]),
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
        return Completion.empty(params.logprobs is not None)
    offsets = lp["text_offset"][part]
    text = str(choice.get("text") or "")
    start = offsets[0] if offsets else len(text)
    tops = lp.get("top_logprobs") or [None] * len(lp["tokens"])
    logprobs = _logprobs(
        {"tokens": lp["tokens"][part], "token_logprobs": lp["token_logprobs"][part]}
        | {"top_logprobs": tops[part]}
    )
    assert logprobs is not None, "given a dict, _logprobs reads it or raises"
    return Completion(
        text=text[start:],
        finish_reason=_finish_reason(choice.get("finish_reason")),
        tokens=len(logprobs),
        logprobs=logprobs if params.logprobs is not None else None,
    )


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
            TokenLogprob(str(token), float(value), _top(top))
            for token, value, top in zip(data["tokens"], data["token_logprobs"], tops, strict=True)
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendResponseError(f"vLLM sent logprobs in an unexpected shape: {exc!r}") from exc


def _top(top: Any) -> tuple[tuple[str, float], ...]:
    """One token's alternatives in completions' parallel lists: token to logprob, or null."""
    return tuple((str(t), float(v)) for t, v in (top or {}).items())
