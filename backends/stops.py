"""Stop strings with vLLM's semantics, for backends that generate in-process.

A completion ends at the first stop string; the stop string itself is cut off unless the
request asks to keep it (`include_stop`). While streaming, the tail that could still grow
into a stop string is held back, so a client never sees text that is later taken away.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["find_stop", "holdback", "truncate_at_stop"]


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> tuple[int, str] | None:
    """The earliest stop string in `text[start:]` as (position, stop string), or None."""
    best: tuple[int, str] | None = None
    for stop in stops:
        at = text.find(stop, start)
        if at != -1 and (best is None or at < best[0]):
            best = (at, stop)
    return best


def truncate_at_stop(text: str, stops: Sequence[str], include_stop: bool) -> tuple[str, bool]:
    """Cut `text` at its first stop string; returns the text and whether a stop was found."""
    found = find_stop(text, stops)
    if found is None:
        return text, False
    at, stop = found
    return text[: at + len(stop)] if include_stop else text[:at], True


def holdback(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of `text` could be the start of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
