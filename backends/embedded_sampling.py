"""The embedded model's sampler: from a step's logits to each row's next token.

In vLLM's order: the grammar mask (structured output), `logit_bias`, the repetition, frequency
and presence penalties, then greedy choice or temperature, `min_p`, `top_k`, `top_p` and a
draw. Log-probabilities are those of the raw distribution, before any of it, as vLLM reports
them by default. A request that sets none of the transforms goes straight to the warping, with
no copy of its logits; every function here blocks and runs on the model thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from backends.embedded_grammar import Constraint
from backends.prompts import SamplingParams

__all__ = ["LogitsTransforms", "pick"]


def pick(
    logits: Any, params: SamplingParams, temperature: float, keep: bool, generator: Any
) -> tuple[Any, Any]:
    """The next token of each row, and the step's raw log-softmax when `keep`.

    Warping happens here, after the raw distribution is kept, so log-probabilities are those of
    the unwarped distribution, as vLLM reports them. Without `top_k`, sampling is from the whole
    vocabulary, as in vLLM and OpenAI; `temperature == 0` is greedy.
    """
    scores = logits.float()
    dist = torch.log_softmax(scores, dim=-1) if keep else None
    if temperature == 0:
        return scores.argmax(dim=-1), dist
    if temperature != 1.0:
        scores = scores / temperature
    if params.min_p > 0.0:
        # Drop tokens less likely than min_p times the likeliest one.
        probs = torch.softmax(scores, dim=-1)
        floor = params.min_p * probs.max(dim=-1, keepdim=True).values
        scores = scores.masked_fill(probs < floor, float("-inf"))
    if 0 < params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True, dim=-1)
        probs = torch.softmax(ordered, dim=-1)
        # Drop a token once the mass before it already reaches top_p; the first always stays.
        drop = (probs.cumsum(dim=-1) - probs) >= params.top_p
        scores = scores.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1), dist


class LogitsTransforms:
    """What a request does to its logits before sampling: a grammar mask, a bias, penalties.

    Made only for a request that sets one of them (`of` returns None otherwise). Output-token
    counts are kept per sequence for the frequency and presence penalties; the repetition
    penalty also counts the prompt's tokens, as vLLM's does.
    """

    def __init__(
        self,
        params: SamplingParams,
        prompt: Sequence[int],
        vocab_size: int,
        constraint: Constraint | None,
    ) -> None:
        self._params = params
        self._constraint = constraint
        self._has_penalties = (
            params.frequency_penalty != 0.0
            or params.presence_penalty != 0.0
            or params.repetition_penalty != 1.0
        )
        self._counts = torch.zeros(params.n, vocab_size) if self._has_penalties else torch.zeros(0)
        self._in_prompt = torch.zeros(vocab_size, dtype=torch.bool)
        if params.repetition_penalty != 1.0 and prompt:
            self._in_prompt[torch.tensor(list(prompt), dtype=torch.long)] = True
        self._bias_ids = torch.tensor([i for i, _ in params.logit_bias], dtype=torch.long)
        self._bias = torch.tensor([b for _, b in params.logit_bias])

    @classmethod
    def of(
        cls,
        params: SamplingParams,
        prompt: Sequence[int],
        vocab_size: int,
        constraint: Constraint | None,
    ) -> LogitsTransforms | None:
        """The request's transforms, or None when it sets none (the common case)."""
        if (
            constraint is None
            and not params.logit_bias
            and params.frequency_penalty == 0.0
            and params.presence_penalty == 0.0
            and params.repetition_penalty == 1.0
        ):
            return None
        return cls(params, prompt, vocab_size, constraint)

    def apply(self, logits: Any, rows: Sequence[int]) -> Any:
        """The transformed logits of sequences `rows` (a copy: `logits` may be a view of the
        batch's, or the prefill's row repeated)."""
        scores = logits.float().clone()
        if self._constraint is not None:
            self._constraint.mask(scores, rows)
        if len(self._bias_ids):
            scores[:, self._bias_ids] += self._bias
        if self._has_penalties:
            params = self._params
            counts = self._counts[torch.tensor(list(rows), dtype=torch.long)]
            if params.repetition_penalty != 1.0:
                seen = self._in_prompt | (counts > 0)
                penalised = torch.where(
                    scores > 0,
                    scores / params.repetition_penalty,
                    scores * params.repetition_penalty,
                )
                scores = torch.where(seen, penalised, scores)
            scores -= params.frequency_penalty * counts
            scores -= params.presence_penalty * (counts > 0).float()
        return scores

    def advance(self, rows: Sequence[int], tokens: Sequence[int]) -> None:
        """Record each row's chosen token."""
        if self._constraint is not None:
            self._constraint.advance(rows, tokens)
        if self._has_penalties:
            for row, token in zip(rows, tokens, strict=True):
                self._counts[row, token] += 1
