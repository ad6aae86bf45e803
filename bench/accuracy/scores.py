"""Each row's scores on the stored problems: replayed through the served rules, or served
(particle filtering); intervals of the paired differences against a baseline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.accuracy.rows import (
    MAX_TOKENS,
    SAMPLES_PER_PROBLEM,
    TEMPERATURE,
    Problem,
    Row,
    last_number,
    load_particles,
)
from bench.replay import Equivalence, Outcome, Stored, comparing_answers, replay


@dataclass
class Scores:
    """Per problem, in the stored order: correct (0/1), generated and verifier tokens."""

    correct: np.ndarray[Any, np.dtype[np.float64]]
    tokens: np.ndarray[Any, np.dtype[np.float64]]
    verifier: np.ndarray[Any, np.dtype[np.float64]]
    outcomes: list[Outcome]


async def replay_row(row: Row, records: Sequence[dict[str, Any]]) -> Scores:
    """Every stored problem replayed through `row`'s strategy, answers compared as served."""
    async with comparing_answers() as equivalence:
        outcomes = [await _replay_one(row, record, equivalence) for record in records]
    return scored(outcomes, records)


async def _replay_one(row: Row, record: dict[str, Any], equivalence: Equivalence) -> Outcome:
    problem = Problem(record["tier"], record["question"], record["answer"], record["seed"])
    samples = [
        Stored(s["text"], s["tokens"], tuple(s.get("confidences", ()))) for s in record["samples"]
    ]
    return await replay(
        row.strategy,
        row.params,
        problem.messages(),
        samples,
        problem.seed,
        MAX_TOKENS,
        TEMPERATURE,
        equivalence,
    )


def scored(outcomes: list[Outcome], records: Sequence[dict[str, Any]]) -> Scores:
    """Each problem's answer checked, and what it spent."""
    return Scores(
        np.array(
            [last_number(o.content) == r["answer"] for o, r in zip(outcomes, records, strict=True)],
            dtype=float,
        ),
        np.array([o.completion_tokens for o in outcomes], dtype=float),
        np.array([o.verifier_tokens for o in outcomes], dtype=float),
        outcomes,
    )


def agreement(baseline: Scores) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The leading answer's share of the 16 samples, per problem."""
    shares = [max(o.trace["votes"].values(), default=0.0) for o in baseline.outcomes]
    return np.array(shares, dtype=float) / SAMPLES_PER_PROBLEM


RNG_SEED = 14
RESAMPLES = 4000


def interval(
    mine: Scores, base: Scores, pick: np.ndarray[Any, np.dtype[np.bool_]]
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Accuracy difference (points) and token ratio against the baseline, each as (estimate,
    low, high) with a 95 % paired bootstrap interval over the picked problems."""
    diff = (mine.correct - base.correct)[pick]
    spent, base_spent = (mine.tokens + mine.verifier)[pick], (base.tokens + base.verifier)[pick]
    rng = np.random.default_rng(RNG_SEED)
    draws = rng.integers(0, len(diff), size=(RESAMPLES, len(diff)))
    diffs = diff[draws].mean(axis=1) * 100
    ratios = spent[draws].sum(axis=1) / np.maximum(base_spent[draws].sum(axis=1), 1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    rlow, rhigh = np.percentile(ratios, [2.5, 97.5])
    ratio = spent.sum() / max(base_spent.sum(), 1)
    return (diff.mean() * 100, low, high), (ratio, rlow, rhigh)


def served_particles(records: Sequence[dict[str, Any]]) -> dict[str, Scores]:
    """The particle-filtering rows that were served on every stored problem, as scores."""
    rows: dict[str, Scores] = {}
    for label, answered in load_particles().items():
        missing = [r["seed"] for r in records if r["seed"] not in answered]
        if missing:
            print(
                f"{label}: served on {len(records) - len(missing)} of {len(records)} problems, "
                "left out of the tables (collect again to finish it)"
            )
            continue
        runs = [answered[r["seed"]] for r in records]
        outcomes = [
            Outcome(
                run["content"],
                run["completion_tokens"],
                run["verifier_tokens"],
                drawn=0,
                stopped_early=run["stopped_early"],
                trace={},
            )
            for run in runs
        ]
        rows[label] = scored(outcomes, records)
    return rows


async def replay_all(rows: Sequence[Row], records: Sequence[dict[str, Any]]) -> dict[str, Scores]:
    return {row.label: await replay_row(row, records) for row in rows}
