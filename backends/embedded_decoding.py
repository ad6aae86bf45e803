"""Decoding one request on the embedded model: its `n` rows, prefilled once, then one token a step.

A `Decoding` picks each row's token from the model's logits (`backends.embedded_sampling`); after
each step its bookkeeping (`StepHook`) ends each sequence on its end-of-sequence token or first
stop string, records exactly how many tokens each sequence generated, gathers log-probabilities
of the unwarped distribution when asked and forwards new text to a streaming client. Rows leave
as they finish, and a cancelled request leaves at the next step. Alone (`Decoding.step`) a
request keeps its own KV cache; `backends.embedded_batch` steps many in one forward pass.

Every method here blocks; `backends.embedded` runs them on its one model thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from backends.embedded_sampling import LogitsTransforms, pick
from backends.prompts import SamplingParams
from backends.results import (
    Completion,
    FinishReason,
    Generation,
    StreamDelta,
    StreamEvent,
    TokenLogprob,
)
from backends.stops import find_stop, holdback

__all__ = ["Cancelled", "DeltaSink", "Decoding", "StepHook", "eos_ids"]

# Below this a temperature means greedy decoding, as in vLLM (dividing by it overflows).
_MIN_TEMPERATURE = 1e-5

DeltaSink = Callable[[StreamEvent], None]


class Cancelled(Exception):
    """Raised on the model thread when the request that queued the work has gone."""


@dataclass
class _Sequence:
    """What one of the `n` sequences has produced so far."""

    ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    # Incremental detokenization: text of ids[prefix:read] is already in `text`; decoding
    # from `prefix` gives the new tokens the context they need (spaces, merged bytes).
    prefix: int = 0
    read: int = 0
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    # Generated tokens not in `ids`: a stop token id, whose text is left out.
    hidden: int = 0
    # Generated tokens the deltas sent so far carried.
    told: int = 0


class StepHook:
    """The per-token bookkeeping of one request's `n` sequences."""

    def __init__(
        self, tokenizer: Any, params: SamplingParams, sink: DeltaSink | None, prompt_tokens: int
    ) -> None:
        self.tokenizer = tokenizer
        self.params = params
        self.sink = sink
        # Told with the first delta sent.
        self._prompt_tokens = prompt_tokens
        self.eos_ids = eos_ids(tokenizer)
        self.sequences = [_Sequence() for _ in range(params.n)]
        # Text is needed while generating only to find stop strings or to stream it.
        self.needs_text = bool(params.stop) or sink is not None
        self._longest_stop = max((len(s) for s in params.stop), default=0)
        self._dist: Any = None

    def advance(self, rows: list[int], tokens: list[int], dist: Any) -> None:
        """Record one step: `tokens[i]` is the new token of sequence `rows[i]`, whose raw
        log-softmax (when logprobs are asked) is `dist[i]`."""
        self._dist = dist
        for i, (row, token) in enumerate(zip(rows, tokens, strict=True)):
            self._advance(row, self.sequences[row], token, i)
        self._dist = None

    def _advance(self, row: int, seq: _Sequence, token: int, at: int) -> None:
        new_logprobs: tuple[TokenLogprob, ...] | None = None
        if self.params.logprobs is not None:
            new_logprobs = (self._logprob(at, token),)
            seq.logprobs.extend(new_logprobs)
        if token in self.params.stop_token_ids:
            # Counted and ended on, but its text left out, as vLLM does with stop token ids.
            seq.hidden += 1
            seq.finish_reason = "stop"
            if self.sink is not None:
                self._emit(row, seq, new_logprobs)
            return
        seq.ids.append(token)
        before = len(seq.text)
        if self.needs_text:
            self._detokenize(seq)
        if token in self.eos_ids:
            seq.finish_reason = "stop"
        elif self.params.stop:
            # Only the new text, and the tail a stop string could straddle, is searched again.
            found = find_stop(seq.text, self.params.stop, max(0, before - self._longest_stop))
            if found is not None:
                at, stop = found
                seq.text = seq.text[: at + len(stop)] if self.params.include_stop else seq.text[:at]
                seq.finish_reason = "stop"
                seq.prefix = seq.read = len(seq.ids)  # nothing after the stop string is text
        if seq.finish_reason is None and len(seq.ids) + seq.hidden >= self.params.max_tokens:
            seq.finish_reason = "length"
        if self.sink is not None:
            self._emit(row, seq, new_logprobs)

    def _detokenize(self, seq: _Sequence, final: bool = False) -> None:
        """Append the text of tokens not yet decoded: work per step is independent of length."""
        decode = self.tokenizer.decode
        settled = decode(seq.ids[seq.prefix : seq.read], skip_special_tokens=True)
        current = decode(seq.ids[seq.prefix :], skip_special_tokens=True)
        # A character split over tokens decodes to U+FFFD until its last byte arrives.
        if len(current) > len(settled) and (final or not current.endswith("\ufffd")):
            seq.text += current[len(settled) :]
            seq.prefix, seq.read = seq.read, len(seq.ids)

    def _logprob(self, at: int, token: int) -> TokenLogprob:
        dist = self._dist[at]
        top: tuple[tuple[str, float], ...] = ()
        k = self.params.logprobs or 0
        if k > 0:
            values, indices = torch.topk(dist, k)
            top = tuple(
                (self.tokenizer.decode([int(i)]), float(v))
                for v, i in zip(values, indices, strict=True)
            )
        return TokenLogprob(self.tokenizer.decode([token]), float(dist[token]), top)

    def _emit(self, row: int, seq: _Sequence, logprobs: tuple[TokenLogprob, ...] | None) -> None:
        assert self.sink is not None
        end = len(seq.text)
        if seq.finish_reason is None:
            # A multi-byte character split over tokens decodes to U+FFFD until it completes.
            while end > seq.emitted and seq.text[end - 1] == "\ufffd":
                end -= 1
            end -= holdback(seq.text[:end], self.params.stop)
        if end > seq.emitted or logprobs:
            generated = len(seq.ids) + seq.hidden
            delta = StreamDelta(
                row,
                seq.text[seq.emitted : end],
                logprobs,
                tokens=generated - seq.told,
                prompt_tokens=self._prompt_tokens,
            )
            self.sink(delta)
            seq.emitted, seq.told, self._prompt_tokens = max(seq.emitted, end), generated, 0

    def completions(self) -> tuple[Completion, ...]:
        """The finished sequences; one never finished by the hook ran out of tokens."""
        for seq in self.sequences:
            if not self.needs_text:
                seq.text = self.tokenizer.decode(seq.ids, skip_special_tokens=True)
            else:
                self._detokenize(seq, final=True)
        return tuple(
            Completion(
                text=seq.text,
                finish_reason=seq.finish_reason or "length",
                tokens=len(seq.ids) + seq.hidden,
                logprobs=tuple(seq.logprobs) if self.params.logprobs is not None else None,
            )
            for seq in self.sequences
        )


def eos_ids(tokenizer: Any) -> frozenset[int]:
    """The tokens that end a sequence: the tokenizer's end-of-sequence and ChatML's turn end."""
    ids = {tokenizer.eos_token_id}
    # ChatML models end a turn with <|im_end|>, which may differ from the tokenizer's eos.
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return frozenset(i for i in ids if i is not None)


class Decoding:
    """One request's rows in progress, advanced one token per step.

    The first step is the prefill of the prompt, done once and copied to the `n` rows; every
    later step feeds each live row its last token. Rows leave as they finish, so a request
    costs only what it still generates. Alone (`step()`) it keeps its own KV cache; in a
    `DecodeBatch` its rows share one forward pass with every other running request's.
    """

    def __init__(
        self,
        model: Any,
        hook: StepHook,
        ids: list[int],
        params: SamplingParams,
        cancel: threading.Event,
        transforms: LogitsTransforms | None = None,
    ) -> None:
        self._model = model
        self._hook = hook
        self._ids = ids
        self._params = params
        self.cancel = cancel
        self._transforms = transforms
        self._temperature = params.temperature if params.temperature >= _MIN_TEMPERATURE else 0.0
        # Each request its own generator: a seeded request is reproducible however the steps of
        # other requests interleave with its own.
        self._generator = (
            torch.Generator().manual_seed(params.seed) if params.seed is not None else None
        )
        self._cache: Any = None
        self._next: Any = None
        self._rows = list(range(params.n))

    @property
    def rows(self) -> int:
        """The sequences still generating."""
        return len(self._rows)

    @property
    def prompt_len(self) -> int:
        """Tokens in the prompt."""
        return len(self._ids)

    @property
    def is_seeded(self) -> bool:
        """Whether the request asked for a seed, i.e. for a reproducible result."""
        return self._generator is not None

    def prefill(self) -> tuple[Any, Any]:
        """The prompt's KV cache, copied to the `n` rows, and each row's next-token logits."""
        if self.cancel.is_set():
            raise Cancelled
        cache = DynamicCache(config=self._model.config)
        with torch.inference_mode():
            out = self._model(
                input_ids=torch.tensor([self._ids]), cache=cache, use_cache=True, logits_to_keep=1
            )
        if self._params.n > 1:
            cache.batch_repeat_interleave(self._params.n)
        return cache, out.logits[:, -1].expand(self._params.n, -1)

    def advance(self, logits: Any) -> tuple[list[int], Any]:
        """Pick each live row's token from its `logits` row and record it; returns the indices
        (into these rows) of the rows still generating and their new tokens."""
        keep = self._params.logprobs is not None
        with torch.inference_mode():
            # Log-probabilities are the raw distribution's, before any transform.
            dist = torch.log_softmax(logits.float(), dim=-1) if keep else None
            if self._transforms is not None:
                logits = self._transforms.apply(logits, self._rows)
            tokens, _ = pick(logits, self._params, self._temperature, False, self._generator)
        chosen: list[int] = tokens.tolist()
        if self._transforms is not None:
            self._transforms.advance(self._rows, chosen)
        self._hook.advance(self._rows, chosen, dist)
        sequences = self._hook.sequences
        live = [i for i, row in enumerate(self._rows) if sequences[row].finish_reason is None]
        if len(live) < len(self._rows):
            self._rows = [self._rows[i] for i in live]
            tokens = tokens[torch.tensor(live, dtype=torch.long)]
        return live, tokens

    def step(self) -> bool:
        """Generate one token in every live row, on its own cache; True once all finished."""
        if self._cache is None:
            self._cache, logits = self.prefill()
        else:
            if self.cancel.is_set():
                raise Cancelled
            with torch.inference_mode():
                logits = self._model(
                    input_ids=self._next, cache=self._cache, use_cache=True
                ).logits[:, -1]
        before = len(self._rows)
        live, tokens = self.advance(logits)
        if not live:
            return True
        if len(live) < before:
            self._cache.batch_select_indices(torch.tensor(live, dtype=torch.long))
        self._next = tokens[:, None]
        return False

    def result(self) -> Generation:
        """The completions, once every row has finished."""
        return Generation(self._hook.completions(), prompt_tokens=len(self._ids))
