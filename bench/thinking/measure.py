"""Every setting on every problem, interleaved: each problem is asked under every setting in
turn (starting one setting further on for each problem), so that a machine that slows down
mid-run slows every setting alike."""

from __future__ import annotations

import asyncio
import sys
import time

from bench.accuracy.rows import Problem
from bench.thinking.asking import Answer, Asking, ask
from bench.thinking.presets import Setting

__all__ = ["measure"]


async def measure(
    asking: Asking, problems: list[Problem], settings: list[Setting], concurrency: int
) -> dict[str, list[Answer]]:
    """Per setting, its answers in the problems' order; `concurrency` problems in flight."""
    answers: dict[str, list[Answer | None]] = {s.label: [None] * len(problems) for s in settings}
    limit = asyncio.Semaphore(concurrency)
    started, done = time.monotonic(), 0

    async def one(index: int, problem: Problem) -> None:
        nonlocal done
        turn = index % len(settings)
        async with limit:
            for setting in settings[turn:] + settings[:turn]:
                answers[setting.label][index] = await ask(asking, problem, setting)
        done += 1
        marks = " ".join(
            f"{s.label}: {'ok' if a.correct else 'no'} {a.thinking}+{a.probes}"
            for s in settings
            if (a := answers[s.label][index]) is not None
        )
        elapsed = time.monotonic() - started
        print(
            f"  [{done}/{len(problems)} {elapsed:.0f} s] {problem.tier} {problem.answer}: {marks}",
            file=sys.stderr,
            flush=True,
        )

    await asyncio.gather(*(one(i, p) for i, p in enumerate(problems)))
    return {label: [a for a in got if a is not None] for label, got in answers.items()}
