"""What the stand-in's model writes, in the shapes vLLM answers with; every front end uses these.

The model is deterministic: choice `i` of a request writes `texts[i % len(texts)]`, one token a
word (words split at spaces), cut at `max_tokens` with finish_reason `length`. A prompt counts
one token a word too. Bodies are JSON-ready dicts: a whole completion (`completion_payload`),
a stream's chunks (`stream_payloads`, `[DONE]` follows them), and the small routes' answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ANSWER",
    "MAX_MODEL_LEN",
    "OVERLOADED",
    "PRM_MODEL",
    "PRM_STEP_TAG",
    "SERVED_MODEL",
    "VOTE_ANSWERS",
    "Plan",
    "Written",
    "classify_payload",
    "completion_payload",
    "count_tokens",
    "detokenize_payload",
    "encode",
    "envelope",
    "error_payload",
    "models_payload",
    "pooling_payload",
    "prompt_text",
    "stream_chunk",
    "stream_payloads",
    "tokenize_payload",
    "usage_payload",
    "words",
]

SERVED_MODEL = "standin/SmolLM2-135M-Instruct"
PRM_MODEL = "standin/Qwen2.5-Math-PRM-7B"
PRM_STEP_TAG = "<extra_0>"
MAX_MODEL_LEN = 2048
# The message of an injected 503.
OVERLOADED = "The server is overloaded (stand-in fault injection)."
# The tests' model: every choice writes one solution, whose last line is the answer.
ANSWER = "First add the numbers.\nAnswer: 7"
# The benchmarks' model: choice i writes VOTE_ANSWERS[i % 8], so 4 wins any vote of n >= 3 and a
# vote has groups to count.
VOTE_ANSWERS = tuple(f"The answer is {a}." for a in ("4", "4", "4", "5", "4", "4", "3", "4"))


def words(text: str) -> list[str]:
    """The model's tokens: one a word."""
    return text.split(" ")


def count_tokens(text: str) -> int:
    return len(words(text))


def _token_ids(pieces: Sequence[str]) -> list[int]:
    # Ids differ by word, so token-level consumers see different sequences for different texts.
    return [100 + len(w) * 7 + (ord(w[0]) if w else 0) for w in pieces]


def prompt_text(messages: Any, prompt: Any) -> str:
    """The text a request's prompt counts as: its messages' contents, or `prompt`."""
    if isinstance(messages, list):
        return " ".join(str(m.get("content") or "") for m in messages if isinstance(m, Mapping))
    return prompt if isinstance(prompt, str) else ""


@dataclass(frozen=True)
class Written:
    """One choice as written: its tokens, their ids and why it ended."""

    tokens: list[str]
    ids: list[int]
    finish: str


@dataclass(frozen=True)
class Plan:
    """Everything a generation answer depends on (hashable: the raw front end caches bodies)."""

    chat: bool
    n: int
    texts: tuple[str, ...]
    max_tokens: int
    stream: bool
    include_usage: bool
    prompt_tokens: int
    model: str

    def written(self, index: int) -> Written:
        pieces = words(self.texts[index % len(self.texts)])
        finish = "stop"
        if len(pieces) > self.max_tokens:
            pieces, finish = pieces[: self.max_tokens], "length"
        return Written(pieces, _token_ids(pieces), finish)


def usage_payload(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _usage(plan: Plan) -> dict[str, int]:
    completion = sum(len(plan.written(i).tokens) for i in range(plan.n))
    return usage_payload(plan.prompt_tokens, completion)


def completion_payload(plan: Plan) -> dict[str, Any]:
    """The whole (non-streamed) answer."""
    choices = []
    for index in range(plan.n):
        written = plan.written(index)
        text = " ".join(written.tokens)
        choice: dict[str, Any] = {"index": index}
        if plan.chat:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": text,
                "reasoning": None,
                "tool_calls": [],
            }
            choice["message"] = message
        else:
            choice["text"] = text
        choice.update(logprobs=None, finish_reason=written.finish, stop_reason=None)
        choice["token_ids"] = written.ids
        choices.append(choice)
    kind = "chat.completion" if plan.chat else "text_completion"
    return envelope(kind, plan.model, choices, usage=_usage(plan))


def envelope(kind: str, model: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A completion or one chunk of a stream: `kind` is its `object`."""
    return {
        "id": "standin-1",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        **extra,
    }


def stream_chunk(plan: Plan, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """One chunk of a streamed answer."""
    kind = "chat.completion.chunk" if plan.chat else "text_completion"
    return envelope(kind, plan.model, choices, **extra)


def stream_payloads(plan: Plan) -> list[dict[str, Any]]:
    """The streamed answer's chunks: per choice a role chunk (chat), then one a token, then the
    usage when asked; `[DONE]` follows. As vLLM with `return_token_ids`, the prompt's ids come
    with the first chunk: at the top of a chat chunk, in the choice of a completion's."""
    prompt_ids = list(range(plan.prompt_tokens))
    chunks: list[dict[str, Any]] = []
    for index in range(plan.n):
        written = plan.written(index)
        if plan.chat:
            role = {"index": index, "delta": {"role": "assistant", "content": ""}, "token_ids": []}
            first = {"prompt_token_ids": prompt_ids} if index == 0 else {}
            chunks.append(stream_chunk(plan, [role], **first))
        for position, (word, token) in enumerate(zip(written.tokens, written.ids, strict=True)):
            piece = word if position == 0 else " " + word
            last = position == len(written.tokens) - 1
            choice: dict[str, Any] = {"index": index}
            if plan.chat:
                choice["delta"] = {"content": piece}
            else:
                choice["text"] = piece
                if position == 0:
                    choice["prompt_token_ids"] = prompt_ids
            choice.update(logprobs=None, finish_reason=written.finish if last else None)
            choice["token_ids"] = [token]
            chunks.append(stream_chunk(plan, [choice]))
    if plan.include_usage:
        chunks.append(stream_chunk(plan, [], usage=_usage(plan)))
    return chunks


def encode(payload: Any) -> bytes:
    """Compact JSON."""
    return json.dumps(payload, separators=(",", ":")).encode()


def models_payload(model: str) -> dict[str, Any]:
    card = {
        "id": model,
        "object": "model",
        "created": 0,
        "owned_by": "vllm",
        "max_model_len": MAX_MODEL_LEN,
    }
    return {"object": "list", "data": [card]}


def error_payload(status: int, message: str) -> dict[str, Any]:
    """vLLM's error body."""
    kind = "ServiceUnavailableError" if status == 503 else "BadRequestError"
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


def tokenize_payload(text: str) -> dict[str, Any]:
    pieces = words(text)
    return {"count": len(pieces), "max_model_len": MAX_MODEL_LEN, "tokens": _token_ids(pieces)}


def detokenize_payload(tokens: Any) -> dict[str, Any]:
    return {"prompt": " ".join(f"t{int(t)}" for t in tokens or ())}


def _scores_payload(
    kind: str, model: Any, data: list[dict[str, Any]], inputs: Sequence[str]
) -> dict[str, Any]:
    tokens = sum(count_tokens(t) for t in inputs)
    return {
        "id": f"{kind}-1",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def pooling_payload(inputs: Sequence[str]) -> dict[str, Any]:
    """A STEP pooler's rows: one [negative, positive] row per step tag, the n-th tag's positive
    probability 0.9 - 0.1 * n, so tests can tell the rows apart."""
    data = []
    for index, text in enumerate(inputs):
        tags = text.count(PRM_STEP_TAG)
        rows = [[round(0.1 + 0.1 * n, 4), round(0.9 - 0.1 * n, 4)] for n in range(tags)]
        data.append({"index": index, "object": "pooling", "data": rows})
    return _scores_payload("pool", PRM_MODEL, data, inputs)


def classify_payload(model: Any, inputs: Sequence[str]) -> dict[str, Any]:
    """A sequence classifier's answer: the positive probability grows with the input's length."""
    data = []
    for index, text in enumerate(inputs):
        positive = min(0.99, len(text) / 1000)
        probs = [1 - positive, positive]
        data.append({"index": index, "label": "LABEL_1", "num_classes": 2, "probs": probs})
    return _scores_payload("classify", model, data, inputs)
