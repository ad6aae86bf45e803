"""Structured output on the embedded model: JSON grammars compiled with xgrammar, and the
per-row matchers that mask each decoding step to the tokens the grammar allows.

xgrammar was chosen by measurement on SmolLM2's 49k-token vocabulary (bench/grammar.py, figures
in README): its mask costs ~0.1-0.3 ms a token against several ms for llguidance and tens for
outlines-core, and a schema compiles in ~5-15 ms (outlines-core took ~10 s for `json_object`).

`Grammars` compiles each distinct schema once, in a worker thread (the event loop and the model
thread never wait for a compile), and keeps the last `max_cached` of them. xgrammar itself is
imported on the first structured request only (~10 s on a busy machine), so requests and
servers that never ask for structured output never pay for it. A failed compile is never kept:
the next request with that schema compiles it again. Without xgrammar installed (a plain `pip
install` of the project leaves it out, see the Makefile), such a request gets a clear 501
(`FeatureUnavailable`) naming the package, and the server says so at start-up
(`is_engine_installed`).

A `Constraint` is one request's matchers, one per sequence, used on the model thread: before a
step it masks the logits of each live row, after it advances each row's matcher by the chosen
token. The grammar admits the end-of-sequence token only once the JSON is complete, so a row
ends as a normal stop; whitespace is compact (no free runs of spaces or newlines, which small
models fall into), and every object closes where the schema says.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from backends.errors import BackendResponseError, FeatureUnavailable
from backends.prompts import StructuredOutput

__all__ = ["ENGINE_MISSING", "Constraint", "Grammars", "is_engine_installed"]

ENGINE_MISSING = (
    "structured output and tool calls on the embedded model need xgrammar, which is not "
    "installed: pip install --no-deps xgrammar==0.2.8 (it declares triton, which the CPU does "
    "not use)"
)


def is_engine_installed() -> bool:
    """Whether xgrammar can be imported (checked without importing it: that takes seconds)."""
    return importlib.util.find_spec("xgrammar") is not None


# `json_object`: any JSON object (xgrammar's strict mode would otherwise forbid every key).
_ANY_OBJECT = {"type": "object", "additionalProperties": True}


class Grammars:
    """Compiled grammars by schema, for one tokenizer; compiled once each, off the event loop."""

    def __init__(
        self, tokenizer: Any, vocab_size: int, eos_ids: Sequence[int], max_cached: int = 64
    ) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos_ids = list(eos_ids)
        self._max_cached = max_cached
        self._compiler: Any = None
        self._setup = threading.Lock()
        # Futures, so concurrent requests with one schema share its single compile.
        self._cache: OrderedDict[str, asyncio.Future[Any]] = OrderedDict()

    async def compiled(self, structured: StructuredOutput) -> Any:
        """The compiled grammar of `structured`; a 400 naming `response_format` if its schema
        cannot be compiled."""
        schema = structured.json_schema if structured.json_schema is not None else _ANY_OBJECT
        key = json.dumps(schema, sort_keys=True)
        future = self._cache.get(key)
        if future is None:
            future = asyncio.ensure_future(asyncio.to_thread(self._compile, key))
            self._cache[key] = future
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        try:
            # Shielded: one caller's cancellation must not cancel the compile others await.
            return await asyncio.shield(future)
        except Exception:
            # A failure is never kept: the engine may be installed, or the cause gone, by the
            # next request (unless a newer compile of the schema has taken its place already).
            if self._cache.get(key) is future:
                del self._cache[key]
            raise

    def _compile(self, schema: str) -> Any:
        compiler = self._compiler_once()
        try:
            return compiler.compile_json_schema(schema, any_whitespace=False)
        except (RuntimeError, ValueError, TypeError) as exc:
            error = BackendResponseError(
                f"response_format's JSON schema cannot be enforced: {exc}", status_code=400
            )
            error.param = "response_format"
            raise error from exc

    def _compiler_once(self) -> Any:
        with self._setup:
            if self._compiler is None:
                try:
                    import xgrammar
                except ImportError as exc:
                    raise FeatureUnavailable(ENGINE_MISSING) from exc

                info = xgrammar.TokenizerInfo.from_huggingface(
                    self._tokenizer, vocab_size=self._vocab_size, stop_token_ids=self._eos_ids
                )
                self._compiler = xgrammar.GrammarCompiler(info, max_threads=1)
            return self._compiler


class Constraint:
    """One request's grammar matchers, one per sequence; used on the model thread only."""

    def __init__(self, grammar: Any, rows: int, vocab_size: int) -> None:
        import xgrammar

        self._xgr = xgrammar
        self._matchers = [xgrammar.GrammarMatcher(grammar) for _ in range(rows)]
        self._bitmask = xgrammar.allocate_token_bitmask(rows, vocab_size)

    def mask(self, scores: Any, rows: Sequence[int]) -> None:
        """Set to -inf, in place, the logits the grammar forbids: `scores[i]` is sequence
        `rows[i]`'s."""
        needed = False
        for i, row in enumerate(rows):
            needed |= self._matchers[row].fill_next_token_bitmask(self._bitmask, i)
        if needed:
            self._xgr.apply_token_bitmask_inplace(scores, self._bitmask[: len(rows)])

    def advance(self, rows: Sequence[int], tokens: Sequence[int]) -> None:
        """Move each row's matcher past its chosen token (one the mask allowed)."""
        for row, token in zip(rows, tokens, strict=True):
            matcher = self._matchers[row]
            if not matcher.is_terminated():
                matcher.accept_token(token)
