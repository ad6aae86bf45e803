"""Which grammar library constrains the embedded model's JSON: llguidance, xgrammar, outlines-core.

Run by hand (a minute; the converted weights must exist, i.e. the server has started once, and
the three libraries must be installed: `pip install llguidance xgrammar outlines-core`):

    .venv/bin/python -m bench.grammar

On SmolLM2's tokenizer (49,152 tokens) it measures, for `json_object` and for two schemas (a
flat one and a nested one with enums, arrays and optional fields):

- compile: the time from the schema to a matcher ready for its first mask (what a request
  whose schema is not cached yet pays once, in a worker thread), the tokenizer setup excluded;
- mask: the mean time per token to compute the allowed-token mask and apply it to a logits
  row, then advance the matcher by the token, walking a valid answer token by token (what
  every decoding step of a structured request pays on the model thread).

Each figure is the median of `--passes` runs. The tokenizer is loaded with transformers from the
server's converted weights; bench/ imports nothing from the project.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import platformdirs

WEIGHTS = "SmolLM2-135M-Instruct-bf16-v1"

FLAT = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
NESTED = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "rating": {"type": "number"},
        "genre": {"enum": ["drama", "comedy", "horror"]},
        "cast": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"actor": {"type": "string"}, "lead": {"type": "boolean"}},
                "required": ["actor", "lead"],
                "additionalProperties": False,
            },
        },
        "sequel": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["title", "rating", "genre", "cast", "sequel"],
    "additionalProperties": False,
}
CASES: dict[str, tuple[dict[str, Any] | None, str]] = {
    "json_object": (None, '{"answer": 42, "items": ["a", "b"], "ok": true}'),
    "flat": (FLAT, '{"name": "Ada Lovelace", "age": 36}'),
    "nested": (
        NESTED,
        '{"title": "Heat", "rating": 8.3, "genre": "drama", "cast": [{"actor": "Al Pacino", '
        '"lead": true}, {"actor": "Val Kilmer", "lead": false}], "sequel": null}',
    ),
}


def median_of(passes: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(passes))


class Llguidance:
    name = "llguidance"

    def __init__(self, tokenizer: Any, vocab: int) -> None:
        import llguidance.hf
        import llguidance.torch

        self.torch = llguidance.torch
        self.mod = llguidance
        self.tok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab)
        self.vocab = vocab

    def compile(self, schema: dict[str, Any] | None) -> Any:
        grammar = self.mod.LLMatcher.grammar_from_json_schema(
            schema if schema is not None else {"type": "object"},
            defaults={"whitespace_flexible": True},
        )
        return self.mod.LLMatcher(self.tok, grammar)

    def walk(self, matcher: Any, ids: list[int], logits: Any) -> None:
        mask = self.torch.allocate_token_bitmask(1, self.vocab)
        for token in ids:
            self.torch.fill_next_token_bitmask(matcher, mask, 0)
            self.torch.apply_token_bitmask_inplace(logits, mask)
            assert matcher.consume_token(token), matcher.get_error()


class XGrammar:
    name = "xgrammar"

    def __init__(self, tokenizer: Any, vocab: int) -> None:
        import xgrammar

        self.xgr = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)
        self.compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
        self.vocab = vocab

    def compile(self, schema: dict[str, Any] | None) -> Any:
        if schema is None:
            compiled = self.compiler.compile_builtin_json_grammar()
        else:
            compiled = self.compiler.compile_json_schema(json.dumps(schema))
        return self.xgr.GrammarMatcher(compiled)

    def walk(self, matcher: Any, ids: list[int], logits: Any) -> None:
        mask = self.xgr.allocate_token_bitmask(1, self.vocab)
        for token in ids:
            matcher.fill_next_token_bitmask(mask)
            self.xgr.apply_token_bitmask_inplace(logits, mask)
            assert matcher.accept_token(token)


class OutlinesCore:
    name = "outlines-core"

    def __init__(self, tokenizer: Any, vocab: int) -> None:
        import outlines_core
        from outlines_core.json_schema import build_regex_from_schema

        self.oc = outlines_core
        self.regex_of = build_regex_from_schema
        # Byte-level BPE: each token string's characters map back to bytes (GPT-2's table).
        decoder = {c: b for b, c in _bytes_to_unicode().items()}
        tokens: dict[bytes, list[int]] = {}
        special = set(tokenizer.all_special_ids)
        for text, index in tokenizer.get_vocab().items():
            if index in special:
                continue
            tokens.setdefault(bytes(decoder[c] for c in text), []).append(index)
        self.vocabulary = outlines_core.Vocabulary(tokenizer.eos_token_id, tokens)
        self.vocab = vocab

    def compile(self, schema: dict[str, Any] | None) -> Any:
        # outlines-core has no free-form JSON grammar: `json_object` is an object whose values
        # nest at most a few levels (its regex for an untyped object).
        regex = self.regex_of(json.dumps(schema if schema is not None else {"type": "object"}))
        return self.oc.Guide(self.oc.Index(regex, self.vocabulary))

    def walk(self, guide: Any, ids: list[int], logits: Any) -> None:
        import torch

        mask = torch.zeros((1, (self.vocab + 31) // 32), dtype=torch.int32)
        for token in ids:
            guide.write_mask_into(mask.data_ptr(), mask.numel(), mask.element_size())
            # Unpack the bitmask to a boolean row and mask the logits, as a sampler would.
            bits = (mask[0, :, None] >> torch.arange(32, dtype=torch.int32)) & 1
            logits.masked_fill_(bits.flatten()[: self.vocab] == 0, float("-inf"))
            guide.advance(token)


def measure(
    library: Any, schema: dict[str, Any] | None, ids: list[int], vocab: int, passes: int
) -> tuple[float, float]:
    """Median seconds to compile `schema`, and per token to mask and advance along `ids`."""
    import torch

    def compile_once() -> float:
        started = time.perf_counter()
        library.compile(schema)
        return time.perf_counter() - started

    def walk_once() -> float:
        matcher = library.compile(schema)
        logits = torch.randn(1, vocab)
        started = time.perf_counter()
        library.walk(matcher, ids, logits)
        return (time.perf_counter() - started) / len(ids)

    return median_of(passes, compile_once), median_of(passes, walk_once)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level BPE alphabet: printable bytes stand for themselves, the rest are
    shifted past 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    path = Path(platformdirs.user_cache_dir("ttc-server")) / WEIGHTS
    tokenizer = AutoTokenizer.from_pretrained(path)
    vocab = len(tokenizer)
    print(f"tokenizer: {vocab} tokens; medians of {args.passes} passes")
    print(f"{'library':14} {'case':12} {'setup s':>8} {'compile ms':>11} {'mask us/token':>14}")
    for kind in (Llguidance, XGrammar, OutlinesCore):
        started = time.perf_counter()
        try:
            library = kind(tokenizer, vocab)
        except Exception as exc:  # a library that cannot read this tokenizer is a finding
            print(f"{kind.name:14} setup failed: {exc!r}")
            continue
        setup = time.perf_counter() - started
        for case, (schema, answer) in CASES.items():
            ids = tokenizer(answer, add_special_tokens=False)["input_ids"]

            try:
                compile_s, mask_s = measure(library, schema, ids, vocab, args.passes)
            except Exception as exc:
                print(f"{kind.name:14} {case:12} failed: {exc!r}")
                continue
            print(
                f"{kind.name:14} {case:12} {setup:8.2f} {compile_s * 1e3:11.2f} "
                f"{mask_s * 1e6:14.1f}"
            )


if __name__ == "__main__":
    main()
