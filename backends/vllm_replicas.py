"""The replicas of one vLLM model: which one a new session goes to, and which are down.

A session stays on its replica, so that the replica's prefix cache serves the request's shared
prefixes; a new session goes to the replica with the fewest calls in flight, since a search holds
its replica far longer than a plain request does. A replica that refused a connection is left out
of new sessions for a while.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence

__all__ = ["Replicas"]

logger = logging.getLogger(__name__)

# How long a replica that refused a connection is left out of new sessions.
_DOWN_S = 10.0


class Replicas:
    """The replica URLs, the calls in flight on each, which are down, and the served model."""

    def __init__(self, urls: Sequence[str], model: str | None) -> None:
        if not urls:
            raise ValueError("the vLLM backend needs at least one replica URL")
        self.urls = tuple(urls)
        self.model = model
        self._in_flight = dict.fromkeys(self.urls, 0)
        self._down_until: dict[str, float] = {}
        self._turn = itertools.count()

    def next(self) -> str:
        """The replica for a new session: the least loaded of those not down (all of them if
        every one is down); ties go in turn, so that idle replicas share new sessions."""
        url = self.least_loaded(())
        assert url is not None, "there is always a replica"
        return url

    def other_than(self, tried: Sequence[str]) -> str | None:
        """The least loaded replica not tried yet, preferring those not marked down."""
        return self.least_loaded(tried)

    def least_loaded(self, exclude: Sequence[str]) -> str | None:
        """The least loaded replica outside `exclude`, preferring those not marked down."""
        left = [url for url in self.urls if url not in exclude]
        if len(left) <= 1:
            return next(iter(left), None)
        now = time.monotonic()
        up = [url for url in left if self._down_until.get(url, 0.0) <= now] or left
        start = next(self._turn) % len(up)
        return min(up[start:] + up[:start], key=self._in_flight.__getitem__)

    def mark_down(self, url: str) -> None:
        """Skip `url` in new sessions for a while: it refused a connection."""
        if self._down_until.get(url, 0.0) <= time.monotonic():
            logger.warning("vLLM replica %s is unreachable; skipping it for %.0f s", url, _DOWN_S)
        self._down_until[url] = time.monotonic() + _DOWN_S

    def started(self, url: str) -> None:
        """A call to `url` is in flight."""
        self._in_flight[url] += 1

    def finished(self, url: str) -> None:
        """A call to `url` has ended."""
        self._in_flight[url] -= 1

    def in_flight(self, url: str) -> int:
        """Calls in flight on `url`."""
        return self._in_flight[url]
