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
from verifiers.equivalence import EquivalencePool

__all__ = ["Vote", "Votes", "rank_groups"]


@dataclass(frozen=True)
class Vote:
    """An answer group with its members and their total vote (a count or a weight)."""

    answer: str
    members: tuple[int, ...]
    weight: float


class Votes(list[Vote]):
    """Answer groups, best first; `is_cut_off`: math-verify was stopped before it compared
    them, so text answers are grouped by their normalised text and value alone."""

    is_cut_off: bool = False


async def rank_groups(
    candidates: Sequence[Sampled], weights: Sequence[float] | None, pool: EquivalencePool | None
) -> Votes:
    """Answer groups, best first: by total vote (a count, or the sum of `weights`). Text
    answers group by equivalence (`verifiers.answer_match`, math-verify in `pool`'s workers;
    JSON answers exactly, in canonical form), calls by their exact canonical form."""
    groups = await group_answers(
        [None if c.tool_calls else c.answer for c in candidates],
        pool,
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
    ranked_votes = Votes(ranked(in_order, key=lambda v: v.weight))
    ranked_votes.is_cut_off = groups.is_cut_off
    return ranked_votes
