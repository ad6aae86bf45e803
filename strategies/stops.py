"""Why a run that draws candidates or searches stopped, as a closed set of kinds: what the
server's metrics count (`StrategyResult.stop`), while the response's `reasoning_stopped_early`
says it in words.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["STOP_KINDS", "StopKind", "stop_kind"]

# Every candidate asked for was drawn; an early-stop rule settled the vote; a token or dollar
# budget was spent; a time budget or the deadline passed; the verifiers' reading allowance was
# spent; every partial solution of a search finished; a search ran all its iterations.
StopKind = Literal[
    "all_drawn", "settled", "budget", "deadline", "verifier_reading", "all_finished", "max_steps"
]
STOP_KINDS: tuple[StopKind, ...] = get_args(StopKind)

# How the reasons a budget stops a run with begin (`Allowance.spent`, `Allowance.time_reason`,
# `ReadRefused`'s in `StrategyContext.verify`, and the strategies' own "token budget reached"),
# and the kind of stop each is.
_STOP_KINDS: tuple[tuple[str, StopKind], ...] = (
    ("time budget reached", "deadline"),
    ("verifier reading reached", "verifier_reading"),
    ("token budget", "budget"),
    ("usd budget", "budget"),
)


def stop_kind(reason: str) -> StopKind:
    """The closed-set kind of a budget's reason to stop (for metrics): `deadline`,
    `verifier_reading` or `budget` (what no prefix names is counted a budget too)."""
    for prefix, kind in _STOP_KINDS:
        if reason.startswith(prefix):
            return kind
    return "budget"
