"""The embedded model itself: SmolLM2 loaded with transformers, and what it does with a request.

`LoadedModel.load` converts the weights on first use (`backends.smollm2`) and loads them in the
precision the CPU computes fastest (`choose_dtype`). `LoadedModel.start` turns a request into a
`Decoding` (`backends.embedded_decoding`) ready for its first step; the model thread steps it in
a `DecodeBatch` (`backends.embedded_batch`, continuous batching), while `LoadedModel.generate`
steps one request alone on its own KV cache. Prompt rendering, token counting and scoring of
given text are here too.

Every method here blocks; `backends.embedded` runs them on its one model thread.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from backends.embedded_batch import DecodeBatch
from backends.embedded_decoding import Cancelled, Decoding, DeltaSink, StepHook
from backends.embedded_grammar import Constraint
from backends.embedded_sampling import LogitsTransforms
from backends.embedded_settings import EmbeddedSettings
from backends.errors import BackendResponseError
from backends.prompts import Prompt, SamplingParams, TextPrompt, TokenPrompt
from backends.results import Generation, PromptLogprobs, TokenLogprob
from backends.smollm2 import converted_model_dir
from backends.tool_calls import with_tools_in_prompt

__all__ = ["Dtype", "LoadedModel", "choose_dtype"]

logger = logging.getLogger(__name__)

Dtype = Literal["float32", "bfloat16"]
# CPU features with which torch's bf16 matrix kernels beat fp32 (native bf16 dot products).
# Without them bf16 is emulated: measured 3x slower than fp32 on an AVX2-only CPU.
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


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
            **prompt.template_kwargs,
        )
        return rendered

    def encode(
        self, prompt: Prompt | TokenPrompt, add_special_tokens: bool | None = None
    ) -> list[int]:
        """The prompt's token ids, rendered first; with the tokenizer's special tokens as
        `add_special_tokens` says, or where vLLM's endpoints add them when it says nothing."""
        if isinstance(prompt, TokenPrompt):
            return list(prompt.ids)
        if add_special_tokens is None:
            # Chat templates carry their own special tokens; raw prompts get the tokenizer's,
            # as vLLM does for /v1/chat/completions and /v1/completions respectively.
            add_special_tokens = isinstance(prompt, TextPrompt)
        encoded = self.tokenizer(self.render(prompt), add_special_tokens=add_special_tokens)
        ids: list[int] = encoded["input_ids"]
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
        hook = StepHook(self.tokenizer, params, sink, len(ids))
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
