"""The embedded model itself: SmolLM2 loaded with transformers, decoding one step at a time.

Every method here blocks; `backends.embedded` runs them on its one model thread.
`LoadedModel.start` turns a request into a `Decoding`: its `n` rows, prefilled once, then one
token per step. A `DecodeBatch` runs the steps of every running request in one forward pass
(continuous batching); `LoadedModel.generate` steps one request alone on its own KV cache. After
each step the bookkeeping (`_StepHook`) ends each sequence on its end-of-sequence token or first
stop string, records exactly how many tokens each sequence generated, gathers log-probabilities
of the unwarped distribution when asked and forwards new text to a streaming client; finished
rows leave the batch and its cache, and a cancelled request leaves at the next step.

The weights run in the precision the CPU computes fastest (`choose_dtype`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from backends.embedded_grammar import Constraint
from backends.embedded_sampling import LogitsTransforms, pick
from backends.errors import BackendResponseError
from backends.prompts import Prompt, SamplingParams, TextPrompt, TokenPrompt
from backends.results import (
    Completion,
    FinishReason,
    Generation,
    PromptLogprobs,
    StreamDelta,
    StreamEvent,
    TokenLogprob,
)
from backends.smollm2 import converted_model_dir
from backends.stops import find_stop, holdback
from backends.tool_calls import with_tools_in_prompt

if TYPE_CHECKING:
    from backends.embedded import EmbeddedSettings

__all__ = [
    "Cancelled",
    "DecodeBatch",
    "DeltaSink",
    "Decoding",
    "Dtype",
    "LoadedModel",
    "choose_dtype",
    "eos_ids",
]

logger = logging.getLogger(__name__)

Dtype = Literal["float32", "bfloat16"]
# CPU features with which torch's bf16 matrix kernels beat fp32 (native bf16 dot products).
# Without them bf16 is emulated: measured 3x slower than fp32 on an AVX2-only CPU.
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")

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


class _StepHook:
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
        import torch

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
        hook: _StepHook,
        ids: list[int],
        params: SamplingParams,
        cancel: threading.Event,
        transforms: LogitsTransforms | None = None,
    ) -> None:
        import torch

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
        import torch
        from transformers import DynamicCache

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
        import torch

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
        import torch

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


class DecodeBatch:
    """Continuous batching: the live rows of every running request in one forward pass a step.

    A request joins between steps: its prompt is prefilled on its own, then its KV cache is
    left-padded (or the batch's is) to a common length and appended, with an attention mask
    hiding the padding and per-row positions. Finished and cancelled rows leave after a step;
    padding no row needs any more is trimmed.

    A request with a seed steps on its own KV cache instead, in the same round: a batch's
    composition and padding shift logits by rounding, which would change what a seed samples.
    """

    def __init__(self, model: Any) -> None:
        self._model = model
        self._members: list[Decoding] = []
        self._solo: list[Decoding] = []
        self._cache: Any = None
        self._mask: Any = None  # (rows, cached length), 1 for real tokens
        self._positions: Any = None  # (rows,), the position of each row's next token
        self._next: Any = None  # (rows,), each row's last sampled token

    @property
    def rows(self) -> int:
        """Rows in the batch."""
        return sum(m.rows for m in self._members) + sum(m.rows for m in self._solo)

    def join(self, decoding: Decoding) -> bool:
        """Prefill `decoding` and add its rows; True if it already finished on its first token."""
        import torch

        if decoding.is_seeded:
            if decoding.step():
                return True
            self._solo.append(decoding)
            return False
        cache, logits = decoding.prefill()
        live, tokens = decoding.advance(logits)
        if not live:
            return True
        if len(live) < len(logits):
            cache.batch_select_indices(torch.tensor(live, dtype=torch.long))
        length = decoding.prompt_len
        mask = torch.ones(len(live), length, dtype=torch.long)
        positions = torch.full((len(live),), length, dtype=torch.long)
        if self._cache is None:
            self._cache, self._mask, self._positions, self._next = cache, mask, positions, tokens
        else:
            width = max(length, self._mask.shape[1])
            ours, theirs = width - self._mask.shape[1], width - length
            self._cache = _merged(self._model.config, self._cache, ours, cache, theirs)
            pad = torch.nn.functional.pad
            self._mask = torch.cat([pad(self._mask, (ours, 0)), pad(mask, (theirs, 0))])
            self._positions = torch.cat([self._positions, positions])
            self._next = torch.cat([self._next, tokens])
        self._members.append(decoding)
        return False

    def step(self) -> list[tuple[Decoding, Exception | None]]:
        """One token for every row; the requests that left, each with None (finished) or why."""
        import torch

        left = self._step_solo()
        # Cancelled requests leave before the forward pass, not after.
        keep = [m for m in self._members if not m.cancel.is_set()]
        if len(keep) < len(self._members):
            left += [(m, Cancelled()) for m in self._members if m.cancel.is_set()]
            self._select([m for m in self._members], keep)
        if not self._members:
            return left
        self._mask = torch.cat([self._mask, torch.ones(len(self._mask), 1, dtype=torch.long)], 1)
        with torch.inference_mode():
            logits = self._model(
                input_ids=self._next[:, None],
                attention_mask=self._mask,
                position_ids=self._positions[:, None],
                cache=self._cache,
                use_cache=True,
            ).logits[:, -1]
        self._positions = self._positions + 1
        rows: list[int] = []
        tokens: list[Any] = []
        stay: list[Decoding] = []
        at = 0
        for member in self._members:
            count = member.rows
            try:
                live, chosen = member.advance(logits[at : at + count])
            except Exception as exc:
                left.append((member, exc))
            else:
                if live:
                    rows += [at + i for i in live]
                    tokens.append(chosen)
                    stay.append(member)
                else:
                    left.append((member, None))
            at += count
        if stay:
            self._keep(rows, torch.cat(tokens))
        self._members = stay
        if not stay:
            self._cache = self._mask = self._positions = self._next = None
        return left

    def _step_solo(self) -> list[tuple[Decoding, Exception | None]]:
        left: list[tuple[Decoding, Exception | None]] = []
        stay: list[Decoding] = []
        for member in self._solo:
            try:
                if member.step():
                    left.append((member, None))
                else:
                    stay.append(member)
            except Exception as exc:
                left.append((member, exc))
        self._solo = stay
        return left

    def _select(self, members: list[Decoding], keep: list[Decoding]) -> None:
        import torch

        rows: list[int] = []
        at = 0
        for member in members:
            if member in keep:
                rows += range(at, at + member.rows)
            at += member.rows
        self._members = keep
        if keep:
            self._keep(rows, self._next[torch.tensor(rows, dtype=torch.long)])
        else:
            self._cache = self._mask = self._positions = self._next = None

    def _keep(self, rows: list[int], tokens: Any) -> None:
        """Keep only `rows` (whose next tokens are `tokens`), then trim unneeded padding."""
        import torch

        if len(rows) < len(self._mask):
            index = torch.tensor(rows, dtype=torch.long)
            self._cache.batch_select_indices(index)
            self._mask = self._mask[index]
            self._positions = self._positions[index]
        self._next = tokens
        # Columns that are padding in every remaining row cost compute and attend to nothing.
        unused = int(self._mask.any(dim=0).int().argmax())
        if unused >= _TRIM_AT:
            self._cache = _trimmed(self._model.config, self._cache, unused)
            self._mask = self._mask[:, unused:]


# Padding columns are dropped from the batch's cache once this many are unused by every row.
_TRIM_AT = 16


def _merged(config: Any, first: Any, first_pad: int, second: Any, second_pad: int) -> Any:
    """One cache of `first`'s rows then `second`'s, each left-padded by so many positions."""
    import torch
    from transformers import DynamicCache

    pad = torch.nn.functional.pad
    merged = DynamicCache(config=config)
    for index, (a, b) in enumerate(zip(first.layers, second.layers, strict=True)):
        keys = torch.cat([pad(a.keys, (0, 0, first_pad, 0)), pad(b.keys, (0, 0, second_pad, 0))])
        values = torch.cat(
            [pad(a.values, (0, 0, first_pad, 0)), pad(b.values, (0, 0, second_pad, 0))]
        )
        merged.update(keys, values, index)
    return merged


def _trimmed(config: Any, cache: Any, start: int) -> Any:
    """`cache` without its first `start` positions."""
    from transformers import DynamicCache

    trimmed = DynamicCache(config=config)
    for index, layer in enumerate(cache.layers):
        trimmed.update(
            layer.keys[:, :, start:].contiguous(), layer.values[:, :, start:].contiguous(), index
        )
    return trimmed


def choose_dtype(setting: str, cpu_flags: frozenset[str] | None = None) -> tuple[Dtype, str]:
    """The weights' precision for `setting` (`auto`, `float32`, `bfloat16`) and why.

    `auto` takes bf16 only where the CPU has native bf16 arithmetic (`avx512_bf16` or
    `amx_bf16` in /proc/cpuinfo): there it is faster than fp32 (~1.5x for 16 sampled rows on an
    AVX-512 EPYC); elsewhere torch emulates it and fp32 is ~3x faster (AVX2).
    """
    if setting == "float32":
        return "float32", "set by --embedded.dtype"
    if setting == "bfloat16":
        return "bfloat16", "set by --embedded.dtype"
    if setting != "auto":
        raise ValueError(f"unknown dtype {setting!r}; choose auto, float32 or bfloat16")
    flags = _cpu_flags() if cpu_flags is None else cpu_flags
    native = [flag for flag in _BF16_FLAGS if flag in flags]
    if native:
        return "bfloat16", f"the CPU computes bf16 natively ({', '.join(native)})"
    return "float32", "the CPU has no native bf16 (no avx512_bf16 or amx_bf16), so fp32 is faster"


def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


class LoadedModel:
    """The loaded model and tokenizer; every method here blocks and runs on the worker thread."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_len = int(getattr(model.config, "max_position_embeddings", 2048))
        # The precision the weights run in, e.g. "float32".
        self.dtype = str(model.dtype).removeprefix("torch.")

    @classmethod
    def load(cls, settings: EmbeddedSettings) -> LoadedModel:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if settings.threads:
            torch.set_num_threads(settings.threads)
        dtype, reason = choose_dtype(settings.dtype)
        logger.info("embedded model runs in %s: %s", dtype, reason)
        path = converted_model_dir(settings.cache_dir)
        tokenizer = AutoTokenizer.from_pretrained(path)
        # The weights on disk are bf16; loading them in fp32 upcasts them exactly.
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        model.eval()
        return cls(model, tokenizer)

    def render(self, prompt: Prompt | TokenPrompt) -> str:
        if isinstance(prompt, TokenPrompt):
            text: str = self.tokenizer.decode(list(prompt.ids))
            return text
        if isinstance(prompt, TextPrompt):
            return prompt.text
        # Tools, earlier calls and their results as text the model reads (SmolLM2's template
        # has no tools section); an assistant turn keeps its reasoning.
        messages = [m.as_dict() for m in with_tools_in_prompt(prompt)]
        rendered: str = self.tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=not prompt.continue_final_message,
            continue_final_message=prompt.continue_final_message,
        )
        return rendered

    def encode(self, prompt: Prompt | TokenPrompt) -> list[int]:
        if isinstance(prompt, TokenPrompt):
            return list(prompt.ids)
        # Chat templates carry their own special tokens; raw prompts get the tokenizer's, as
        # vLLM does for /v1/chat/completions and /v1/completions respectively.
        ids: list[int] = self.tokenizer(
            self.render(prompt), add_special_tokens=isinstance(prompt, TextPrompt)
        )["input_ids"]
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def start(
        self,
        prompt: Prompt | TokenPrompt,
        params: SamplingParams,
        cancel: threading.Event,
        sink: DeltaSink | None,
        grammar: Any = None,
    ) -> Decoding:
        """A request's decoding, ready for its first step (the prefill); `grammar` is the
        compiled grammar its output must follow (`backends.embedded_grammar`)."""
        ids = self.encode(prompt)
        self.check_length(len(ids), params.max_tokens)
        self.check_token_ids(params)
        if cancel.is_set():
            raise Cancelled
        vocab = self.vocab_size
        constraint = Constraint(grammar, params.n, vocab) if grammar is not None else None
        transforms = LogitsTransforms.of(params, ids, vocab, constraint)
        hook = _StepHook(self.tokenizer, params, sink, len(ids))
        return Decoding(self.model, hook, ids, params, cancel, transforms)

    def batch(self) -> DecodeBatch:
        """An empty continuous batch over this model, for the scheduler."""
        return DecodeBatch(self.model)

    def generate(
        self,
        prompt: Prompt | TokenPrompt,
        params: SamplingParams,
        cancel: threading.Event,
        sink: DeltaSink | None,
    ) -> Generation:
        """One request decoded to the end on the caller's thread, with nothing interleaved."""
        decoding = self.start(prompt, params, cancel, sink)
        while not decoding.step():
            pass
        return decoding.result()

    def prompt_logprobs(self, prompt: Prompt, continuation: str) -> PromptLogprobs:
        import torch

        prompt_text = self.render(prompt)
        encoded = self.tokenizer(
            prompt_text + continuation,
            add_special_tokens=isinstance(prompt, TextPrompt),
            return_offsets_mapping=True,
        )
        ids: list[int] = encoded["input_ids"]
        self.check_length(len(ids), 0)
        # A token belongs to the continuation when it ends past the prompt text, as vLLM's echo
        # scoring reads it from text offsets.
        first = next(
            (i for i, (_, end) in enumerate(encoded["offset_mapping"]) if end > len(prompt_text)),
            len(ids),
        )
        with torch.inference_mode():
            logits = self.model(torch.tensor([ids])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        scored = tuple(
            TokenLogprob(self.tokenizer.decode([ids[i]]), float(logprobs[i - 1, ids[i]]))
            for i in range(max(first, 1), len(ids))
        )
        return PromptLogprobs(scored, prompt_tokens=len(ids))

    @property
    def vocab_size(self) -> int:
        """Logits per step: the model's vocabulary, padding included."""
        return int(self.model.config.vocab_size)

    def check_token_ids(self, params: SamplingParams) -> None:
        """A 400 naming the field for a token id the model does not have."""
        for name, ids in (
            ("logit_bias", [i for i, _ in params.logit_bias]),
            ("stop_token_ids", list(params.stop_token_ids)),
        ):
            if any(i >= self.vocab_size for i in ids):
                error = BackendResponseError(
                    f"{name} holds a token id past the vocabulary (ids below {self.vocab_size})",
                    status_code=400,
                )
                error.param = name
                raise error

    def check_length(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens + max_tokens > self.max_len:
            raise BackendResponseError(
                f"This model's maximum context length is {self.max_len} tokens; the prompt has "
                f"{prompt_tokens} tokens and max_tokens asks for {max_tokens} more.",
                status_code=400,
            )
