"""Step 3, `tune`: replay a grid of `auto` policies (how the default policy was chosen)."""

from __future__ import annotations

import argparse
import asyncio

import numpy as np

from bench.accuracy.rows import BASELINE, COMMON, ROWS, Row, load_samples
from bench.accuracy.scores import interval, replay_all, replay_row


def policies() -> list[list[dict[str, int | None]]]:
    """The grid `tune` tries: a first stage of 3 or 4, a second of 8, then 16; a stage fewer
    (up to 16, or up to 8 only); a stage more; a first stage that stops on 2 votes."""
    grid: list[list[dict[str, int | None]]] = []
    for first, first_stop in ((3, 3), (4, 3), (4, 4)):
        for second_stop in (5, 6, 7):
            grid.append(
                [
                    {"samples": first, "stop_at": first_stop},
                    {"samples": 8, "stop_at": second_stop},
                    {"samples": 16, "stop_at": None},
                ]
            )
    grid.append([{"samples": 4, "stop_at": 3}, {"samples": 16, "stop_at": None}])
    grid.append([{"samples": 4, "stop_at": 3}, {"samples": 8, "stop_at": None}])
    grid.append(
        [
            {"samples": 4, "stop_at": 2},
            {"samples": 8, "stop_at": 5},
            {"samples": 16, "stop_at": None},
        ]
    )
    for third_stop in (7, 8):
        grid.append(
            [
                {"samples": 4, "stop_at": 3},
                {"samples": 8, "stop_at": 5},
                {"samples": 12, "stop_at": third_stop},
                {"samples": 16, "stop_at": None},
            ]
        )
    return grid


def tune(args: argparse.Namespace) -> None:
    records = load_samples()
    baselines = [r for r in ROWS if r.label.startswith("majority")]
    scores = asyncio.run(replay_all(baselines, records))
    base, m8 = scores[BASELINE], scores["majority@8"]
    every = np.ones(len(records), dtype=bool)
    for label, mine in scores.items():
        print(f"{label:<48} {mine.correct.mean():>6.1%} {mine.tokens.mean():>7.1f} tok")
    for policy in policies():
        row = Row("auto", "auto", {**COMMON, "policy": policy})
        mine = asyncio.run(replay_row(row, records))
        (d, dl, dh), (r, _, _) = interval(mine, base, every)
        (d8, _, _), (r8, _, _) = interval(mine, m8, every)
        text = " → ".join(
            f"{s['samples']}" + (f"/{s['stop_at']}" if s["stop_at"] else "") for s in policy
        )
        print(
            f"auto {text:<43} {mine.correct.mean():>6.1%} {mine.tokens.mean():>7.1f} tok "
            f"vs m@16: Δ {d:+.1f} [{dl:+.1f}, {dh:+.1f}] points, {r:.0%} of its tokens; "
            f"vs m@8: Δ {d8:+.1f} points, {r8:.0%} of its tokens"
        )
