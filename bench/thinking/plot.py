"""Accuracy against thinking tokens, one point per setting: a PNG when matplotlib is installed
(it is in the project's test extras), an ASCII plot on the terminal otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.accuracy.scores import RESAMPLES, RNG_SEED
from bench.thinking.asking import Answer

__all__ = ["plot"]


def _points(answers: dict[str, list[Answer]]) -> list[tuple[str, float, float, float, float]]:
    """Per setting: label, thinking + probe tokens per problem, accuracy (%) and its 95 %
    bootstrap interval."""
    points = []
    for label, mine in answers.items():
        correct = np.array([a.correct for a in mine], dtype=float)
        draws = np.random.default_rng(RNG_SEED).integers(0, len(mine), (RESAMPLES, len(mine)))
        low, high = np.percentile(correct[draws].mean(axis=1) * 100, [2.5, 97.5])
        tokens = float(np.mean([a.thinking + a.probes for a in mine]))
        points.append((label, tokens, float(correct.mean() * 100), float(low), float(high)))
    return points


def plot(answers: dict[str, list[Answer]], title: str, out: Path | None) -> None:
    """The plot of `answers`, written to `out` (PNG), or printed when matplotlib is missing."""
    points = _points(answers)
    try:
        import matplotlib
    except ImportError:
        print("\nmatplotlib is not installed: an ASCII plot instead of the PNG")
        _ascii(points)
        return
    if out is None:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, tokens, accuracy, low, high in points:
        ax.errorbar(
            tokens,
            accuracy,
            yerr=[[accuracy - low], [high - accuracy]],
            fmt="s" if label == "full thinking" else "o",
            capsize=3,
            label=label,
        )
    ax.set_xlabel("thinking + probe tokens per problem (mean)")
    ax.set_ylabel("accuracy (%), 95 % bootstrap interval")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"\nplot written to {out}")


def _ascii(points: list[tuple[str, float, float, float, float]]) -> None:
    width, height = 60, 15
    most = max(p[1] for p in points) or 1.0
    grid = [[" "] * (width + 1) for _ in range(height + 1)]
    for index, (_, tokens, accuracy, _, _) in enumerate(points):
        x, y = round(tokens / most * width), round(accuracy / 100 * height)
        grid[height - y][x] = str(index)
    for row, cells in enumerate(grid):
        label = f"{100 * (height - row) / height:5.0f} %" if row % 5 == 0 else " " * 7
        print(f"{label} |{''.join(cells)}")
    print(" " * 8 + "+" + "-" * (width + 1))
    print(" " * 8 + f"0{'thinking + probe tokens per problem':^{width - 8}}{most:.0f}")
    for index, (label, tokens, accuracy, _, _) in enumerate(points):
        print(f"  {index}: {label} ({tokens:.0f} tokens, {accuracy:.0f} %)")
