"""The report's two PNG plots: accuracy against tokens, and tokens saved against agreement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.accuracy.rows import BASELINE, EARLY_STOPS, TIERS
from bench.accuracy.scores import RESAMPLES, RNG_SEED, Scores


def plot(
    scores: dict[str, Scores],
    tiers: np.ndarray[Any, np.dtype[np.str_]],
    share: np.ndarray[Any, np.dtype[np.float64]],
    out: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, tier in zip(axes.flat, ("overall", *TIERS), strict=True):
        pick = np.ones(len(tiers), dtype=bool) if tier == "overall" else tiers == tier
        if not pick.any():
            continue
        curve: list[tuple[float, float]] = []
        for (label, mine), color in zip(scores.items(), colors, strict=False):
            accuracy = mine.correct[pick].mean() * 100
            rng = np.random.default_rng(RNG_SEED)
            boots = mine.correct[pick][rng.integers(0, pick.sum(), (RESAMPLES, pick.sum()))]
            low, high = np.percentile(boots.mean(axis=1) * 100, [2.5, 97.5])
            tokens = (mine.tokens + mine.verifier)[pick].mean()
            is_fixed = label.startswith("majority")
            if is_fixed:
                curve.append((tokens, accuracy))
            ax.errorbar(
                tokens,
                accuracy,
                yerr=[[accuracy - low], [high - accuracy]],
                fmt="s" if is_fixed else "o",
                color=color,
                capsize=3,
                label=label,
            )
        # Majority vote at 4, 8, 16: the fixed-spend curve the adaptive rows are measured on.
        ax.plot(*zip(*curve, strict=True), color="grey", alpha=0.5, zorder=0)
        # Log-scaled: the particle rows' verifier tokens are several times the votes' tokens.
        ax.set_xscale("log")
        ax.set_title(f"{tier} ({int(pick.sum())} problems)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("generated + verifier tokens per problem")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), frameon=False)
    fig.suptitle("SmolLM2-135M on vLLM (CPU): accuracy against tokens, 95 % bootstrap intervals")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out / "accuracy-vs-tokens.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    base = scores[BASELINE].tokens + scores[BASELINE].verifier
    levels = np.unique(share)
    jitter = np.random.default_rng(RNG_SEED).uniform(-0.01, 0.01, len(share))
    for label in (*EARLY_STOPS, "auto"):
        saved = base - (scores[label].tokens + scores[label].verifier)
        (line,) = ax.plot(
            levels, [saved[share == level].mean() for level in levels], "-o", label=label
        )
        ax.scatter(share + jitter, saved, s=6, alpha=0.25, color=line.get_color())
    ax.set_xlabel("agreement: the leading answer's share of the 16 samples")
    ax.set_ylabel("tokens saved per problem against majority@16")
    ax.set_title("Savings come from the questions the model agrees on (dots: problems)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "tokens-saved-vs-agreement.png", dpi=110)
    plt.close(fig)
    print(f"\nplots written to {out}/")
