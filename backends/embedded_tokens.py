"""The embedded model's tokenizer-facing work: scoring a prompt's own tokens, tokenizing,
and the tokenizer's configuration. Blocking; the scoring runs on the model's thread."""

from __future__ import annotations

from typing import Any

import torch

from backends.results import PromptToken, TokenLogprob

__all__ = ["score_prompt", "tokenizer_info"]


def score_prompt(
    model: Any, tokenizer: Any, ids: list[int], top: int
) -> tuple[str, tuple[PromptToken, ...], TokenLogprob]:
    """The prompt's text; each of its tokens with the log-probability the model gives it after
    the ones before (none for the first) and the `top` likeliest tokens there; and the greedy
    next token. One forward pass, as vLLM's prompt log-probabilities are."""
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    decode = tokenizer.decode
    text = decode(ids)
    offsets = _offsets(tokenizer, text, ids)
    scored = []
    for i, token in enumerate(ids):
        value: float | None = None
        alternatives: tuple[tuple[str, float], ...] = ()
        if i > 0:
            dist = logprobs[i - 1]
            value = float(dist[token])
            if top > 0:
                values, indices = torch.topk(dist, top)
                alternatives = tuple(
                    (decode([int(j)]), float(v)) for v, j in zip(values, indices, strict=True)
                )
        scored.append(PromptToken(decode([token]), value, alternatives, offsets[i]))
    return text, tuple(scored), _greedy(logprobs[-1], decode, top)


def _greedy(dist: Any, decode: Any, top: int) -> TokenLogprob:
    values, indices = torch.topk(dist, max(top, 1))
    alternatives = tuple((decode([int(j)]), float(v)) for v, j in zip(values, indices, strict=True))
    return TokenLogprob(decode([int(indices[0])]), float(values[0]), alternatives[:top])


def _offsets(tokenizer: Any, text: str, ids: list[int]) -> list[int]:
    """Where each token's text starts in `text`: from the tokenizer's offsets when the text
    tokenizes back to these ids (the usual case), else from the text of the tokens before."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if encoded["input_ids"] == ids:
        return [start for start, _ in encoded["offset_mapping"]]
    return [len(tokenizer.decode(ids[:i])) for i in range(len(ids))]


def tokenizer_info(tokenizer: Any) -> dict[str, Any]:
    """The tokenizer's configuration as vLLM's `GET /tokenizer_info` gives it: its
    tokenizer_config.json settings (special tokens as text), class and chat template."""
    info: dict[str, Any] = {}
    for key, value in (getattr(tokenizer, "init_kwargs", None) or {}).items():
        if key in ("vocab_file", "merges_file", "tokenizer_file", "name_or_path"):
            continue
        info[key] = (
            value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        )
    for key in ("eos_token", "bos_token", "pad_token", "unk_token"):
        token = getattr(tokenizer, key, None)
        if token is not None:
            info[key] = str(token)
    info["tokenizer_class"] = type(tokenizer).__name__
    if getattr(tokenizer, "chat_template", None):
        info["chat_template"] = tokenizer.chat_template
    return info
