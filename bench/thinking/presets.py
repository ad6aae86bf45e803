"""What `bench.thinking` compares: the settings (a thinking control each, or none), and the
systems it runs them on, each with the sizes that suit it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["SYSTEMS", "Setting", "System", "settings"]

# Tokens a probe may write: a number and the closing brace.
PROBE_MAX_TOKENS = 8


@dataclass(frozen=True)
class Setting:
    """One column of the comparison: `reasoning_params.thinking` (None: full thinking)."""

    label: str
    budget: int | None = None
    interval: int | None = None
    agree: int | None = None

    @property
    def thinking(self) -> dict[str, Any] | None:
        """The request's `reasoning_params.thinking`."""
        thinking: dict[str, Any] = {}
        if self.budget is not None:
            thinking["max_tokens"] = self.budget
        if self.interval is not None:
            probe = {"interval": self.interval, "agree": self.agree}
            thinking["probe"] = probe | {"max_tokens": PROBE_MAX_TOKENS}
        return thinking or None

    def bound(self, max_tokens: int) -> int | None:
        """The most thinking tokens one candidate may spend: the budget (the request's
        `max_tokens` without one), plus one probe interval with probes; None without a control."""
        if self.thinking is None:
            return None
        return (self.budget or max_tokens) + (self.interval or 0)


FULL = Setting("full thinking")


def settings(budgets: Sequence[int], probes: Sequence[str]) -> list[Setting]:
    """Full thinking, then a budget each, then a probe each (`interval:agree[:budget]`)."""
    chosen = [FULL, *(Setting(f"budget {b}", budget=b) for b in budgets)]
    for spec in probes:
        parts = [int(p) for p in spec.split(":")]
        if len(parts) not in (2, 3):
            raise ValueError(f"a probe is interval:agree[:budget], not {spec!r}")
        interval, agree, *budget = parts
        label = f"probe {interval}×{agree}" + (f" + budget {budget[0]}" if budget else "")
        chosen.append(Setting(label, budget[0] if budget else None, interval, agree))
    return chosen


@dataclass(frozen=True)
class System:
    """A model to measure the controls on, and the sizes that suit it."""

    name: str
    # chat: the problem's messages; raw: /v1/completions with a few-shot prompt that ends in
    # an open <think> block (a model that does not think by itself).
    api: Literal["chat", "raw"]
    max_tokens: int
    temperature: float
    per_tier: int
    budgets: tuple[int, ...]
    probes: tuple[str, ...]
    # What its figures mean, printed above the table.
    note: str


SYSTEMS = {
    system.name: system
    for system in (
        System(
            "standin",
            "chat",
            max_tokens=400,
            temperature=0.0,
            per_tier=20,
            budgets=(64, 128),
            probes=("16:2", "16:3"),
            note="the vLLM stand-in thinking from a script (bench/thinking/script.py): one token "
            "a word; it settles on the answer after 16-120 words and double-checks it up to "
            "200-320. Its figures follow from the script: they check the mechanism (where "
            "thinking stops, what is counted, that budgets hold), not that a control is safe "
            "on a real model.",
        ),
        System(
            "smollm2",
            "raw",
            max_tokens=64,
            temperature=0.0,
            per_tier=3,
            budgets=(16, 32),
            probes=("8:2", "8:3"),
            note="SmolLM2-135M-Instruct, the embedded model, on the CPU. SmolLM2 is NOT a "
            "reasoning model: a one-shot raw prompt that ends in an open <think> block makes "
            "it write a short thought, greedily. The figures show the mechanism on a real "
            "model's text, not reasoning gains; rerun on a reasoning model for those.",
        ),
        System(
            "reasoning",
            "chat",
            max_tokens=4096,
            temperature=0.6,
            per_tier=70,
            budgets=(512, 1024),
            probes=("64:2", "64:3"),
            note="a reasoning model behind a running gateway (--gateway-url).",
        ),
    )
}
