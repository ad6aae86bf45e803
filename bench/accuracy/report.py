"""Step 2, `report`: tables per tier and overall, the adaptive-compute targets, the live
subset against its replay, and the plots."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.accuracy.plot import plot
from bench.accuracy.rows import (
    BASELINE,
    EARLY_STOPS,
    LIVE,
    MAX_TOKENS,
    ROWS,
    SAMPLES_PER_PROBLEM,
    TEMPERATURE,
    TIERS,
    Row,
    last_number,
    load_samples,
)
from bench.accuracy.scores import (
    Scores,
    agreement,
    interval,
    replay_all,
    replay_row,
    served_particles,
)


def print_table(
    title: str, scores: dict[str, Scores], pick: np.ndarray[Any, np.dtype[np.bool_]]
) -> None:
    base = scores[BASELINE]
    print(f"\n{title} ({int(pick.sum())} problems)")
    header = (
        f"{'row':<20} {'accuracy':>8} {'Δ acc vs m@16 [95% CI]':>24} {'gen tok':>8} "
        f"{'ver tok':>8} {'tokens vs m@16 [95% CI]':>24}"
    )
    print(header)
    print("-" * len(header))
    for label, mine in scores.items():
        (d, dl, dh), (r, rl, rh) = interval(mine, base, pick)
        print(
            f"{label:<20} {mine.correct[pick].mean():>8.1%} "
            f"{f'{d:+.1f} [{dl:+.1f}, {dh:+.1f}]':>24} {mine.tokens[pick].mean():>8.1f} "
            f"{mine.verifier[pick].mean():>8.1f} {f'{r:.0%} [{rl:.0%}, {rh:.0%}]':>24}"
        )


def check_targets(scores: dict[str, Scores], share: np.ndarray[Any, np.dtype[np.float64]]) -> None:
    """Issue 14's targets, each PASS or MISS with its gap (point estimates)."""
    every = np.ones(len(share), dtype=bool)
    agreed = share >= 0.7
    base, m8 = scores[BASELINE], scores["majority@8"]
    lines: list[tuple[str, bool, str]] = []
    for label in EARLY_STOPS:
        (d, _, _), (r, _, _) = interval(scores[label], base, every)
        lines.append((f"{label}: within 2 points of majority@16", d >= -2.0, f"Δ {d:+.1f} points"))
        lines.append((f"{label}: fewer tokens than majority@16", r < 1.0, f"{r:.0%} of its tokens"))
        if agreed.any():
            (_, _, _), (ra, _, _) = interval(scores[label], base, agreed)
            lines.append(
                (
                    f"{label}: ≤ 40 % of majority@16's tokens where it agrees ≥ 70 % "
                    f"({int(agreed.sum())} problems)",
                    ra <= 0.40,
                    f"{ra:.0%} (gap {ra - 0.40:+.0%})",
                )
            )
    auto = scores["auto"]
    (d8, _, _), (r8, _, _) = interval(auto, m8, every)
    lines.append(("auto: at least as accurate as majority@8", d8 >= 0.0, f"Δ {d8:+.1f} points"))
    lines.append(("auto: fewer tokens than majority@8", r8 < 1.0, f"{r8:.0%} of its tokens"))
    (d, _, _), (r, _, _) = interval(auto, base, every)
    lines.append(("auto: within 2 points of majority@16", d >= -2.0, f"Δ {d:+.1f} points"))
    lines.append(
        ("auto: ≤ 85 % of majority@16's tokens", r <= 0.85, f"{r:.0%} (gap {r - 0.85:+.0%})")
    )
    print("\nTargets (adaptive compute), overall unless said")
    for text, passed, detail in lines:
        print(f"  {'PASS' if passed else 'MISS'}  {text}: {detail}")


def check_live(records: Sequence[dict[str, Any]]) -> None:
    """Whether the live subset answered and spent what its replay, with the strategy and params
    each request was served with, does."""
    if not LIVE.exists():
        print("\nlive subset: none stored (collect --live N)")
        return
    by_seed = {r["seed"]: r for r in records}
    tally: dict[str, list[int]] = {}
    for line in LIVE.read_text().splitlines():
        live = json.loads(line)
        record = by_seed[live["seed"]]
        row = Row(live["label"], live["strategy"], live["params"])
        replayed = asyncio.run(replay_row(row, [record])).outcomes[0]
        counts = tally.setdefault(live["label"], [0, 0, 0, 0])
        counts[0] += 1
        counts[1] += live["content"] == replayed.content
        counts[2] += last_number(live["content"]) == last_number(replayed.content)
        counts[3] += live["completion_tokens"] == replayed.completion_tokens
    # vLLM batches differently live than when the samples were drawn, and bf16 rounding can
    # then change a sampled token: a message may differ while its answer and length do not.
    print("\nlive subset against its replay (same seeds, same params):")
    for label, (total, same_text, same_answer, same_tokens) in tally.items():
        print(
            f"  {label}: {same_text}/{total} same chosen message, {same_answer}/{total} same "
            f"answer, {same_tokens}/{total} same generated tokens"
        )


def report(args: argparse.Namespace) -> None:
    records = load_samples()
    scores = asyncio.run(replay_all(ROWS, records))
    scores |= served_particles(records)
    tiers = np.array([r["tier"] for r in records])
    share = agreement(scores[BASELINE])
    print(
        f"{len(records)} problems, {SAMPLES_PER_PROBLEM} stored samples each "
        f"(T={TEMPERATURE}, {MAX_TOKENS} new tokens); mean agreement {share.mean():.0%}, "
        f"{int((share >= 0.7).sum())} problems with one answer in ≥ 70 % of samples"
    )
    print_table("overall", scores, np.ones(len(records), dtype=bool))
    for tier in TIERS:
        if (tiers == tier).any():
            print_table(f"tier {tier}", scores, tiers == tier)
    check_targets(scores, share)
    check_live(records)
    if args.plots:
        plot(scores, tiers, share, Path(args.plots))
