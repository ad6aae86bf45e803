"""Answer groups: the candidates that give the same answer, and their total vote.

Ties, everywhere, follow `strategies.ranking`: among equal votes, weights or scores, the
candidate (or answer group) that appeared first wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from strategies.ranking import ranked
from strategies.sampling import Sampled
from verifiers.answer_match import group_answers

__all__ = ["Vote", "rank_groups"]


@dataclass(frozen=True)
class Vote:
    """An answer group with its members and their total vote (a count or a weight)."""

    answer: str
    members: tuple[int, ...]
    weight: float


async def rank_groups(candidates: Sequence[Sampled], weights: Sequence[float] | None) -> list[Vote]:
    """Answer groups, best first: by total vote (a count, or the sum of `weights`). Text
    answers group by equivalence (`verifiers.answer_match`; JSON answers exactly, in canonical
    form), calls by their exact canonical form."""
    groups = await group_answers(
        [None if c.tool_calls else c.answer for c in candidates],
        exact=any(c.is_json for c in candidates),
    )
    members = [(g.answer, g.members) for g in groups]
    calls: dict[str, list[int]] = {}
    for i, c in enumerate(candidates):
        if c.tool_calls and c.answer is not None:
            calls.setdefault(c.answer, []).append(i)
    members += calls.items()
    votes = [
        Vote(
            answer,
            tuple(sorted(indices)),
            float(len(indices)) if weights is None else sum(weights[i] for i in indices),
        )
        for answer, indices in members
    ]
    # In the order of their first members, so that a tie goes to the earlier group.
    in_order = sorted(votes, key=lambda v: v.members[0])
    return ranked(in_order, key=lambda v: v.weight)
