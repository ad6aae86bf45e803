"""The comparison against full thinking: accuracy with paired 95 % intervals, thinking and
probe tokens, what each control saved, whether every budget held, and the targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.accuracy.scores import Scores, interval
from bench.thinking.asking import Answer
from bench.thinking.presets import FULL, Setting

__all__ = ["Row", "print_report", "rows", "unclosed_note"]

# The targets for probing (early exit): within this many points of full thinking's accuracy,
# with at least this share of its thinking tokens saved, probes' own tokens counted.
TARGET_POINTS = 2.0
TARGET_SAVED = 0.25


@dataclass(frozen=True)
class Row:
    """One setting's figures against full thinking."""

    setting: Setting
    accuracy: float
    # Accuracy difference in points, and its 95 % paired bootstrap interval.
    delta: tuple[float, float, float]
    gained: int
    lost: int
    median_thinking: float
    total_thinking: int
    total_probes: int
    # Share of full thinking's tokens saved (1 - ratio), with its interval: thinking alone, and
    # thinking with the probes that cut it.
    saved: tuple[float, float, float]
    saved_with_probes: tuple[float, float, float]
    most: int
    bound: int | None
    seconds: float

    @property
    def is_within_bound(self) -> bool:
        return self.bound is None or self.most <= self.bound


def _scores(answers: list[Answer], with_probes: bool) -> Scores:
    spent = [a.thinking + (a.probes if with_probes else 0) for a in answers]
    correct = np.array([a.correct for a in answers], dtype=float)
    return Scores(correct, np.array(spent, dtype=float), np.zeros(len(answers)), [])


def _saved(ratio: tuple[float, float, float]) -> tuple[float, float, float]:
    estimate, low, high = ratio
    return 1 - estimate, 1 - high, 1 - low


def rows(answers: dict[str, list[Answer]], settings: list[Setting], max_tokens: int) -> list[Row]:
    """Each setting's row, against full thinking on the same problems."""
    base = answers[FULL.label]
    every = np.ones(len(base), dtype=bool)
    made = []
    for setting in settings:
        mine = answers[setting.label]
        delta, ratio = interval(_scores(mine, False), _scores(base, False), every)
        _, ratio_with_probes = interval(_scores(mine, True), _scores(base, False), every)
        made.append(
            Row(
                setting,
                accuracy=float(np.mean([a.correct for a in mine])),
                delta=delta,
                gained=sum(a.correct and not b.correct for a, b in zip(mine, base, strict=True)),
                lost=sum(b.correct and not a.correct for a, b in zip(mine, base, strict=True)),
                median_thinking=float(np.median([a.thinking for a in mine])),
                total_thinking=sum(a.thinking for a in mine),
                total_probes=sum(a.probes for a in mine),
                saved=_saved(ratio),
                saved_with_probes=_saved(ratio_with_probes),
                most=max(a.most for a in mine),
                bound=setting.bound(max_tokens),
                seconds=float(np.median([a.seconds for a in mine])),
            )
        )
    return made


def _interval(values: tuple[float, float, float], scale: float, digits: int, unit: str) -> str:
    estimate, low, high = (v * scale for v in values)
    return f"{estimate:+.{digits}f}{unit} [{low:+.{digits}f}, {high:+.{digits}f}]"


def table(made: list[Row]) -> str:
    """The markdown table."""
    lines = [
        "| setting | accuracy | Δ vs full, points [95 % CI] | +/− | thinking tok/problem "
        "(median) | thinking tok (total) | probe tok (total) | saved: thinking [95 % CI] | "
        "saved: thinking + probes [95 % CI] | most thinking / bound | s/problem (median) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in made:
        bound = "—" if row.bound is None else f"{row.bound} {'✓' if row.is_within_bound else '✗'}"
        lines.append(
            f"| {row.setting.label} | {row.accuracy:.0%} | {_interval(row.delta, 1, 1, '')} | "
            f"+{row.gained}/−{row.lost} | {row.median_thinking:.0f} | {row.total_thinking:,} | "
            f"{row.total_probes:,} | {_interval(row.saved, 100, 0, ' %')} | "
            f"{_interval(row.saved_with_probes, 100, 0, ' %')} | {row.most} / {bound} | "
            f"{row.seconds:.2f} |"
        )
    return "\n".join(lines)


def targets(made: list[Row]) -> list[str]:
    """PASS or MISS for each target, with the margin (point estimates)."""
    lines = []
    for row in made:
        if row.setting.interval is None:
            continue
        delta, saved = row.delta[0], row.saved_with_probes[0]
        lines.append(
            f"{'PASS' if delta >= -TARGET_POINTS else 'MISS'}  {row.setting.label}: within "
            f"{TARGET_POINTS:.0f} points of full thinking: Δ {delta:+.1f} points"
        )
        lines.append(
            f"{'PASS' if saved >= TARGET_SAVED else 'MISS'}  {row.setting.label}: ≥ "
            f"{TARGET_SAVED:.0%} fewer thinking tokens, probes counted: {saved:.0%} "
            f"(thinking alone {row.saved[0]:.0%})"
        )
    bounded = [row for row in made if row.bound is not None]
    broken = [row.setting.label for row in bounded if not row.is_within_bound]
    held = "every budget held" if not broken else f"over the bound: {', '.join(broken)}"
    lines.append(f"{'PASS' if not broken else 'MISS'}  {held} ({len(bounded)} settings)")
    return lines


def unclosed_note(answers: dict[str, list[Answer]]) -> str | None:
    """How many candidates of full thinking never closed their block, and what the gateway's
    answers to them scored as served; None when every one closed it."""
    base = answers[FULL.label]
    unclosed = [a for a in base if a.unclosed]
    if not unclosed:
        return None
    served = sum(a.served_correct for a in unclosed)
    return (
        f"Full thinking: {sum(a.unclosed for a in unclosed)} candidates on {len(unclosed)} "
        f"problems never closed their thinking block. Without a control the gateway returned "
        f"their text as the answer with 0 thinking tokens ({served} of those answers right); "
        "read here as the controls read them: all thinking, no answer. As served, full "
        f"thinking scored {sum(a.served_correct for a in base) / len(base):.0%}."
    )


def print_report(made: list[Row], header: dict[str, Any], note: str | None = None) -> None:
    """The run's description, the table, a note under it and the targets, as markdown."""
    for key, value in header.items():
        print(f"- {key}: {value}")
    print()
    print(table(made))
    print()
    if note:
        print(note)
        print()
    print("Targets (probing against full thinking; budgets: the most any candidate thought):")
    for line in targets(made):
        print(f"  {line}")
