"""The embedded model itself: SmolLM2 loaded with transformers, generating on the caller's thread.

Every method here blocks; `backends.embedded` runs them on its one worker thread. A per-step hook
(`_StepHook`) sees every token as it is produced. It ends each sequence on its end-of-sequence
token or first stop string, records exactly how many tokens each sequence generated, gathers
log-probabilities when asked, forwards new text to a streaming client and stops the whole batch
when the request is cancelled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backends.base import (
    Completion,
    FinishReason,
    Generation,
    Prompt,
    PromptLogprobs,
    SamplingParams,
    StreamDelta,
    StreamEvent,
    TextPrompt,
    TokenLogprob,
    TokenPrompt,
)
from backends.errors import BackendResponseError
from backends.smollm2 import converted_model_dir
from backends.stops import find_stop, holdback

if TYPE_CHECKING:
    from backends.embedded import EmbeddedSettings

__all__ = ["DeltaSink", "LoadedModel"]

# Below this a temperature means greedy decoding, as in vLLM (dividing by it overflows).
_MIN_TEMPERATURE = 1e-5

DeltaSink = Callable[[StreamEvent], None]


class _Cancelled(Exception):
    """Raised on the worker thread when the request that queued the work has gone."""


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


class _LogprobStash:
    """A logits processor that keeps the step's raw log-softmax and applies temperature and top-p.

    Owning the warping here (instead of generate's own warpers) is what lets the hook read
    log-probabilities of the unwarped distribution, as vLLM reports them, without keeping
    every step's full logits.
    """

    def __init__(self, temperature: float, top_p: float, keep: bool) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.keep = keep
        self.last: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.keep:
            self.last = torch.log_softmax(scores.float(), dim=-1)
        if self.temperature > 0 and self.temperature != 1.0:
            scores = scores / self.temperature
        if self.temperature > 0 and self.top_p < 1.0:
            ordered, order = torch.sort(scores, descending=True, dim=-1)
            cumulative = torch.softmax(ordered.float(), dim=-1).cumsum(dim=-1)
            # Drop a token once the mass before it already reaches top_p; the first always stays.
            drop = (cumulative - torch.softmax(ordered.float(), dim=-1)) >= self.top_p
            scores = scores.masked_fill(
                torch.zeros_like(drop).scatter(-1, order, drop), float("-inf")
            )
        return scores


class _StepHook:
    """A stopping criterion that does the per-token bookkeeping of one batched generate call."""

    def __init__(
        self,
        tokenizer: Any,
        params: SamplingParams,
        prompt_len: int,
        stash: _LogprobStash,
        cancel: threading.Event,
        sink: DeltaSink | None,
    ) -> None:
        self.tokenizer = tokenizer
        self.params = params
        self.prompt_len = prompt_len
        self.stash = stash
        self.cancel = cancel
        self.sink = sink
        self.eos_ids = _eos_ids(tokenizer)
        self.sequences = [_Sequence() for _ in range(params.n)]
        # Text is needed while generating only to find stop strings or to stream it.
        self.needs_text = bool(params.stop) or sink is not None
        self._longest_stop = max((len(s) for s in params.stop), default=0)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        for row, seq in enumerate(self.sequences):
            if seq.finish_reason is None:
                self._advance(row, seq, int(input_ids[row, -1]))
            done[row] = seq.finish_reason is not None
        if self.cancel.is_set():
            done[:] = True
        return done

    def _advance(self, row: int, seq: _Sequence, token: int) -> None:
        seq.ids.append(token)
        new_logprobs: tuple[TokenLogprob, ...] | None = None
        if self.params.logprobs is not None:
            new_logprobs = (self._logprob(row, token),)
            seq.logprobs.extend(new_logprobs)
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
        if seq.finish_reason is None and len(seq.ids) >= self.params.max_tokens:
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

    def _logprob(self, row: int, token: int) -> TokenLogprob:
        import torch

        dist = self.stash.last[row]
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
            self.sink(StreamDelta(row, seq.text[seq.emitted : end], logprobs))
            seq.emitted = max(seq.emitted, end)

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
                tokens=len(seq.ids),
                logprobs=tuple(seq.logprobs) if self.params.logprobs is not None else None,
            )
            for seq in self.sequences
        )


def _eos_ids(tokenizer: Any) -> frozenset[int]:
    ids = {tokenizer.eos_token_id}
    # ChatML models end a turn with <|im_end|>, which may differ from the tokenizer's eos.
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return frozenset(i for i in ids if i is not None)


class LoadedModel:
    """The loaded model and tokenizer; every method here blocks and runs on the worker thread."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_len = int(getattr(model.config, "max_position_embeddings", 2048))

    @classmethod
    def load(cls, settings: EmbeddedSettings) -> LoadedModel:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if settings.threads:
            torch.set_num_threads(settings.threads)
        path = converted_model_dir(settings.cache_dir)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
        model.eval()
        return cls(model, tokenizer)

    def render(self, prompt: Prompt | TokenPrompt) -> str:
        if isinstance(prompt, TokenPrompt):
            text: str = self.tokenizer.decode(list(prompt.ids))
            return text
        if isinstance(prompt, TextPrompt):
            return prompt.text
        messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
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

    def generate(
        self,
        prompt: Prompt | TokenPrompt,
        params: SamplingParams,
        cancel: threading.Event,
        sink: DeltaSink | None,
    ) -> Generation:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        ids = self.encode(prompt)
        self.check_length(len(ids), params.max_tokens)
        if cancel.is_set():
            raise _Cancelled
        is_sampling = params.temperature >= _MIN_TEMPERATURE
        stash = _LogprobStash(
            params.temperature if is_sampling else 0.0, params.top_p, params.logprobs is not None
        )
        hook = _StepHook(self.tokenizer, params, len(ids), stash, cancel, sink)
        config = GenerationConfig(
            max_new_tokens=params.max_tokens,
            do_sample=is_sampling,
            # Otherwise transformers' default top_k=50 silently truncates every sample; vLLM and
            # OpenAI sample from the whole vocabulary (top_p is applied by the stash).
            top_k=0 if is_sampling else None,
            eos_token_id=sorted(hook.eos_ids),
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        if params.seed is not None:
            torch.manual_seed(params.seed)
        # One row per sample (rather than num_return_sequences) also serves greedy n > 1.
        inputs = torch.tensor([ids] * params.n)
        with torch.inference_mode():
            self.model.generate(
                inputs,
                attention_mask=torch.ones_like(inputs),
                generation_config=config,
                logits_processor=LogitsProcessorList([stash]),
                stopping_criteria=StoppingCriteriaList([hook]),
            )
        if cancel.is_set():
            raise _Cancelled
        return Generation(hook.completions(), prompt_tokens=len(ids))

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

    def check_length(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens + max_tokens > self.max_len:
            raise BackendResponseError(
                f"This model's maximum context length is {self.max_len} tokens; the prompt has "
                f"{prompt_tokens} tokens and max_tokens asks for {max_tokens} more.",
                status_code=400,
            )
