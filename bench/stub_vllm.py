"""A zero-latency stand-in for vLLM's OpenAI server, cheap enough to be the benchmarks' ceiling.

Run it by hand, or let `bench/gateway.py` and `bench/faults.py` start it:

    .venv/bin/python bench/stub_vllm.py --port 8100
    .venv/bin/python bench/stub_vllm.py --port 8100 --latency-ms 50 --fail-503 0.3

It answers with vLLM's shapes: `GET /v1/models` (one model), `POST /v1/chat/completions` and
`POST /v1/completions` (`n` choices with `index`, `message` or `text`, `finish_reason`,
`token_ids`, and `usage`; `stream: true` gives SSE chunks ending in `data: [DONE]`), and
`POST /tokenize` / `/detokenize`. Every answer is a short sum, "The answer is 4." for most
choice indexes and another number for a few, the same for the same index, so a majority vote
has groups to count. `GET /stats` tells how many calls it received (`POST /stats/reset` zeroes
them), so a benchmark can report backend calls per client request.

The HTTP/1.1 server is a bare asyncio protocol (keep-alive, Content-Length or chunked request
bodies) and answers from a cache of encoded bodies: a framework would spend more CPU here than
the gateways under test and lower the ceiling. It uses uvloop when it is importable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, cast

MODEL = "stub-model"
MAX_MODEL_LEN = 4096
# The answer of choice `index` is ANSWERS[index % len(ANSWERS)]: 4 wins any vote of n >= 3.
ANSWERS = ("4", "4", "4", "5", "4", "4", "3", "4")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}
_GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions")


def answer_text(index: int) -> str:
    """The deterministic answer of choice `index`."""
    return f"The answer is {ANSWERS[index % len(ANSWERS)]}."


@dataclass
class Stats:
    """What the stub received since its last reset."""

    calls: int = 0
    generation_calls: int = 0
    choices: int = 0
    failed_503: int = 0
    paths: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Options:
    latency_s: float = 0.0
    fail_503: float = 0.0
    retry_after: bool = False
    model: str = MODEL


class Stub:
    """The state shared by every connection: options, counters and the cache of bodies."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.stats = Stats()
        self._cache: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
        self._random = random.Random()

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes, bytes, bool]:
        """(status, content type, body, generation call) for one request."""
        path = path.split("?", 1)[0]
        if path == "/stats":
            return 200, b"application/json", json.dumps(asdict(self.stats)).encode(), False
        if path == "/stats/reset":
            self.stats = Stats()
            return 200, b"application/json", b'{"reset": true}', False
        self.stats.calls += 1
        self.stats.paths[path] = self.stats.paths.get(path, 0) + 1
        if method == "GET" and path == "/v1/models":
            return 200, b"application/json", self._models(), False
        if method == "GET" and path in ("/health", "/ping"):
            return 200, b"application/json", b"{}", False
        if method != "POST":
            return self._error(404, f"no route {method} {path}")
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            return self._error(400, "body is not JSON")
        if not isinstance(request, dict):
            return self._error(400, "body is not a JSON object")
        if path in _GENERATION_PATHS:
            self.stats.generation_calls += 1
            if self.options.fail_503 and self._random.random() < self.options.fail_503:
                self.stats.failed_503 += 1
                return self._error(503, "The server is overloaded (stub fault injection).")
            return self._generate(request, chat=path == "/v1/chat/completions")
        if path == "/tokenize":
            tokens = list(_prompt_text(request).encode())
            payload = {"count": len(tokens), "max_model_len": MAX_MODEL_LEN, "tokens": tokens}
            return 200, b"application/json", json.dumps(payload).encode(), False
        if path == "/detokenize":
            text = bytes(int(t) % 256 for t in request.get("tokens") or ()).decode(errors="replace")
            return 200, b"application/json", json.dumps({"prompt": text}).encode(), False
        return self._error(404, f"no route {method} {path}")

    def _models(self) -> bytes:
        model = {
            "id": self.options.model,
            "object": "model",
            "created": 0,
            "owned_by": "vllm",
            "max_model_len": MAX_MODEL_LEN,
        }
        return json.dumps({"object": "list", "data": [model]}).encode()

    def _error(self, status: int, message: str) -> tuple[int, bytes, bytes, bool]:
        kind = "ServiceUnavailableError" if status == 503 else "BadRequestError"
        error = {"message": message, "type": kind, "param": None, "code": status}
        return status, b"application/json", json.dumps({"error": error}).encode(), status == 503

    def _generate(self, request: dict[str, Any], chat: bool) -> tuple[int, bytes, bytes, bool]:
        n = request.get("n") or 1
        max_tokens = request.get("max_tokens") or request.get("max_completion_tokens") or 16
        if not isinstance(n, int) or not isinstance(max_tokens, int) or n < 1 or max_tokens < 1:
            return self._error(400, "n and max_tokens must be positive integers")
        stream = bool(request.get("stream"))
        usage_in_stream = bool((request.get("stream_options") or {}).get("include_usage"))
        prompt_tokens = max(1, len(_prompt_text(request)) // 4)
        self.stats.choices += n
        # Bodies differ only by these fields, so each is encoded once.
        key = (chat, n, max_tokens, stream, usage_in_stream, prompt_tokens)
        cached = self._cache.get(key)
        if cached is None:
            if stream:
                body = _stream_body(
                    chat, n, max_tokens, usage_in_stream, prompt_tokens, self.options
                )
            else:
                body = _full_body(chat, n, max_tokens, prompt_tokens, self.options)
            kind = b"text/event-stream" if stream else b"application/json"
            cached = (kind, body)
            if len(self._cache) < 4096:
                self._cache[key] = cached
        return 200, cached[0], cached[1], True


def _prompt_text(request: dict[str, Any]) -> str:
    messages = request.get("messages")
    if isinstance(messages, list):
        return "".join(
            f"{m.get('role', '')}: {m.get('content', '')}\n"
            for m in messages
            if isinstance(m, dict)
        )
    prompt = request.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def _choice_tokens(index: int, max_tokens: int) -> tuple[list[str], list[int], str]:
    words = answer_text(index).split(" ")
    finish = "stop"
    if len(words) > max_tokens:
        words, finish = words[:max_tokens], "length"
    # One token a word; ids differ by answer so token-level consumers see different sequences.
    ids = [100 + len(w) * 7 + ord(w[0]) for w in words]
    return words, ids, finish


def _usage(n: int, max_tokens: int, prompt_tokens: int) -> dict[str, int]:
    completion = sum(len(_choice_tokens(i, max_tokens)[0]) for i in range(n))
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


def _full_body(chat: bool, n: int, max_tokens: int, prompt_tokens: int, options: Options) -> bytes:
    choices = []
    for index in range(n):
        words, ids, finish = _choice_tokens(index, max_tokens)
        text = " ".join(words)
        choice: dict[str, Any] = {"index": index}
        if chat:
            choice["message"] = {"role": "assistant", "content": text, "tool_calls": []}
        else:
            choice["text"] = text
        choice.update(logprobs=None, finish_reason=finish, stop_reason=None, token_ids=ids)
        choices.append(choice)
    body = {
        "id": "stub-1",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": options.model,
        "choices": choices,
        "usage": _usage(n, max_tokens, prompt_tokens),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _stream_body(
    chat: bool, n: int, max_tokens: int, with_usage: bool, prompt_tokens: int, options: Options
) -> bytes:
    kind = "chat.completion.chunk" if chat else "text_completion"
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        payload = {
            "id": "stub-1",
            "object": kind,
            "created": created,
            "model": options.model,
            "choices": choices,
            **extra,
        }
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    parts: list[bytes] = []
    for index in range(n):
        words, ids, finish = _choice_tokens(index, max_tokens)
        for position, (word, token) in enumerate(zip(words, ids, strict=True)):
            piece = word if position == 0 else " " + word
            last = position == len(words) - 1
            choice: dict[str, Any] = {"index": index}
            if chat:
                delta: dict[str, Any] = {"content": piece}
                if position == 0:
                    delta["role"] = "assistant"
                choice["delta"] = delta
            else:
                choice["text"] = piece
            choice.update(logprobs=None, finish_reason=finish if last else None, token_ids=[token])
            parts.append(chunk([choice]))
    if with_usage:
        parts.append(chunk([], usage=_usage(n, max_tokens, prompt_tokens)))
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: parse requests, answer them in order."""

    def __init__(self, stub: Stub) -> None:
        self._stub = stub
        self._buffer = bytearray()
        self._transport: asyncio.WriteTransport | None = None
        # With a latency, answers wait in tasks; chaining them keeps pipelined answers in order.
        self._previous: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transport writes; uvloop's do not subclass asyncio's, so no isinstance.
        self._transport = cast(asyncio.WriteTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None:
            request = self._parse()
            if request is None:
                return
            self._dispatch(*request)

    def _parse(self) -> tuple[str, str, bytes, bool] | None:
        """(method, path, body, keep-alive) of the first complete request in the buffer."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        method, path, version = (head[0].split(" ") + ["", "", ""])[:3]
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parsed = _dechunk(self._buffer, start)
            if parsed is None:
                return None
            body, consumed = parsed
        else:
            length = int(headers.get("content-length") or 0)
            if len(self._buffer) < start + length:
                return None
            body, consumed = bytes(self._buffer[start : start + length]), start + length
        del self._buffer[:consumed]
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" and (version != "HTTP/1.0" or connection == "keep-alive")
        return method, path, body, keep_alive

    def _dispatch(self, method: str, path: str, body: bytes, keep_alive: bool) -> None:
        status, kind, payload, generation = self._stub.handle(method, path, body)
        extra = b""
        if status == 503 and self._stub.options.retry_after:
            extra = b"Retry-After: 0\r\n"
        response = b"".join(
            (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n".encode(),
                b"Content-Type: ",
                kind,
                f"\r\nContent-Length: {len(payload)}\r\n".encode(),
                extra,
                b"" if keep_alive else b"Connection: close\r\n",
                b"\r\n",
                payload,
            )
        )
        delay = self._stub.options.latency_s if generation else 0.0
        if delay <= 0 and self._previous is None:
            self._write(response, keep_alive)
            return
        self._previous = asyncio.ensure_future(
            self._write_later(self._previous, delay, response, keep_alive)
        )

    async def _write_later(
        self, previous: asyncio.Task[None] | None, delay: float, response: bytes, keep: bool
    ) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if previous is not None:
            await previous
        self._write(response, keep)
        if self._previous is asyncio.current_task():
            self._previous = None

    def _write(self, response: bytes, keep_alive: bool) -> None:
        if self._transport is None:
            return
        self._transport.write(response)
        if not keep_alive:
            self._transport.close()
            self._transport = None


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """(body, bytes consumed) of a complete chunked body starting at `start`, else None."""
    body = bytearray()
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        position = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n", position)
            return None if trailer_end < 0 else (bytes(body), trailer_end + 2)
        if len(buffer) < position + size + 2:
            return None
        body += buffer[position : position + size]
        position += size + 2


async def serve(host: str, port: int, options: Options) -> None:
    stub = Stub(options)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(stub), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(f"stub_vllm listening on http://{host}:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100, help="0 picks a free port")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="wait this long before each generation"
    )
    parser.add_argument(
        "--fail-503",
        type=float,
        default=0.0,
        help="answer this random fraction of generation calls with a vLLM-style 503",
    )
    parser.add_argument(
        "--retry-after", action="store_true", help="send Retry-After: 0 with the 503s"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not 0.0 <= args.fail_503 <= 1.0:
        sys.exit("--fail-503 is a fraction between 0 and 1")
    options = Options(
        latency_s=args.latency_ms / 1000,
        fail_503=args.fail_503,
        retry_after=args.retry_after,
        model=args.model,
    )
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve(args.host, args.port, options))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
