"""The one ranking rule every strategy uses: best first, and among equals, the earliest.

Candidates, answer groups and search nodes are all ranked here, so a run is reproducible from
what it sampled: a tie goes to what was sampled (or, for a group, first voted) earlier.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["best", "ranked"]

T = TypeVar("T")


def ranked(items: Iterable[T], key: Callable[[T], Any]) -> list[T]:
    """`items` from the highest `key` down; items with equal keys keep their order."""
    # A stable sort keeps equal keys in their original order even when reversed.
    return sorted(items, key=key, reverse=True)


def best(items: Iterable[T], key: Callable[[T], Any]) -> T | None:
    """The item with the highest `key` (the earliest among equals), or None when there is none."""
    # max keeps the first of equal maxima.
    return max(items, key=key, default=None)
