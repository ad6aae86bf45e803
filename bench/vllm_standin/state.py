"""What every front end of the stand-in shares: its options, counters, record and faults."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.vllm_standin.answers import ANSWER, SERVED_MODEL, Plan, count_tokens

__all__ = ["Options", "Recorded", "StandIn", "Stats"]


@dataclass(frozen=True)
class Options:
    """How a stand-in behaves: the model it serves, what it writes, and injected faults."""

    model: str = SERVED_MODEL
    # Choice i writes answers[i % len(answers)].
    answers: tuple[str, ...] = (ANSWER,)
    # Wait this long before each generation answer.
    latency_s: float = 0.0
    # Answer this random fraction of generation calls with a vLLM-style 503.
    fail_503: float = 0.0
    # Send `Retry-After: 0` with those 503s.
    retry_after: bool = False
    # (question, model text) pairs: a prompt containing a question is answered with its text,
    # as a reasoning model that settles (`thinking`); only the checking front end reads it.
    script: tuple[tuple[str, str], ...] = ()
    # Generation fields the checking front end lets through, as vLLM ignores (and logs) fields
    # it does not know: those a router in front adds to every body it forwards.
    ignored: frozenset[str] = frozenset()


@dataclass
class Stats:
    """What the stand-in received since its last reset (`GET /stats`)."""

    calls: int = 0
    generation_calls: int = 0
    choices: int = 0
    failed_503: int = 0
    paths: dict[str, int] = field(default_factory=dict)


@dataclass
class Recorded:
    """One request the checking front end received."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class StandIn:
    """A stand-in's state: its URL once it serves, counters, and (checking front end) every
    request and violation. Tests steer it: `faults` lists statuses the next generation calls
    are answered with, in order; a prompt containing SLOW waits `slow_s` first."""

    def __init__(self, options: Options | None = None, url: str = "") -> None:
        self.options = options or Options()
        self.url = url
        self.stats = Stats()
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self.faults: list[int] = []
        self.slow_s = 5.0
        self.tool_calls = 0
        self._random = random.Random()

    @property
    def model(self) -> str:
        return self.options.model

    def paths(self) -> list[str]:
        """The paths of the recorded requests, in order."""
        return [r.path for r in self.requests]

    def reset(self) -> None:
        """Zero the counters."""
        self.stats = Stats()

    def count(self, path: str) -> None:
        """One call to `path` (every route but the stats ones counts)."""
        self.stats.calls += 1
        self.stats.paths[path] = self.stats.paths.get(path, 0) + 1

    def admit(self) -> int | None:
        """Counts a generation call; the status of the fault it is answered with, if any."""
        self.stats.generation_calls += 1
        if self.faults:
            return self.faults.pop(0)
        if self.options.fail_503 and self._random.random() < self.options.fail_503:
            self.stats.failed_503 += 1
            return 503
        return None

    def plan(
        self,
        chat: bool,
        n: Any,
        max_tokens: Any,
        stream: Any,
        stream_options: Mapping[str, Any] | None,
        prompt: str,
        texts: tuple[str, ...] | None = None,
    ) -> Plan | str:
        """The answer to give, from the request's fields, or why the request is invalid; the
        model writes `texts` (by default its answers)."""
        n = n or 1
        max_tokens = max_tokens or 16
        if not isinstance(n, int) or not isinstance(max_tokens, int) or n < 1 or max_tokens < 1:
            return "n and max_tokens must be positive integers"
        self.stats.choices += n
        return Plan(
            chat,
            n,
            texts or self.options.answers,
            max_tokens,
            bool(stream),
            bool((stream_options or {}).get("include_usage")),
            count_tokens(prompt),
            self.options.model,
        )
