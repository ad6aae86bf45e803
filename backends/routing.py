"""The routing key: what a router in front of vLLM hashes to keep one request's calls on one engine.

The server makes a key for every request it serves (`new_routing_key`) and sets it for the
request's context (`routing_key_set`); each vLLM session opened while the request is served (the
strategy's, an llm_judge's on the gateway's backend, the tokenizer route's) reads it
(`current_routing_key`) and sends it in `--vllm.routing-header` on every call, so all of them
share one key. A session opened outside a request makes a key of its own.

The key is a fresh random id, not derived from the request id: that id is the client's
`X-Request-Id` when it sends one, so anything computed from it, a keyed hash too, would let a
client pin all its requests to one engine by reusing an id; a per-call value would scatter a
request over the engines. A random key is the same on every call of one request, differs
between requests, is never client-controlled, and needs no secret shared by gateway replicas.
"""

from __future__ import annotations

import contextlib
import contextvars
import secrets
from collections.abc import Iterator

__all__ = ["checked_routing_header", "current_routing_key", "new_routing_key", "routing_key_set"]

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("routing_key", default=None)


def new_routing_key() -> str:
    """A fresh key: 128 random bits as 32 hex digits."""
    return secrets.token_hex(16)


def current_routing_key() -> str | None:
    """The key of the request being served here, or None outside a request."""
    return _current.get()


@contextlib.contextmanager
def routing_key_set(key: str) -> Iterator[None]:
    """`key` is the current routing key until the block ends (and in tasks started inside it)."""
    token = _current.set(key)
    try:
        yield
    finally:
        _current.reset(token)


def checked_routing_header(header: str | None) -> str | None:
    """`header`, unless it is X-Request-Id, which carries each call's own id to vLLM (its engine
    request id): a routing key there would give every concurrent call of a request one id."""
    if header is not None and header.lower() == "x-request-id":
        raise ValueError(
            "X-Request-Id carries each call's own id to vLLM; route on another header "
            "(vllm-router: X-Session-ID)"
        )
    return header
