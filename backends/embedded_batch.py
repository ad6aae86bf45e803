"""Continuous batching on the embedded model: every running request's rows in one forward pass.

`DecodeBatch` is the `Batch` the model thread (`backends.embedded_scheduler`) steps; its members
are `Decoding`s (`backends.embedded_decoding`). Every method here blocks.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

from backends.embedded_decoding import Cancelled, Decoding

__all__ = ["DecodeBatch"]


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
    trimmed = DynamicCache(config=config)
    for index, layer in enumerate(cache.layers):
        trimmed.update(
            layer.keys[:, :, start:].contiguous(), layer.values[:, :, start:].contiguous(), index
        )
    return trimmed
