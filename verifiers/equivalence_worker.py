"""A worker process that merges equal answers with math-verify: `python -m
verifiers.equivalence_worker MEMORY_BYTES`.

It reads one JSON line per job from stdin, `{"answers": [...], "cpu_s": N}`, and writes one to
the stdout it started with, `{"merged": [[i, j], [k], ...]}`: the indices of the answers that
math-verify finds equal, grouped, each group in first-seen order. Its address space is capped
at start and its CPU time per job (a job past it is killed by SIGXCPU); the pool that started it
(`verifiers.equivalence`) also kills it when a job outlives its wall-clock timeout.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["READY", "main", "merge_equal"]

READY = "ready"


def merge_equal(answers: Sequence[str]) -> list[list[int]]:
    """The indices of `answers`, grouped where math-verify finds them equal."""
    from math_verify import parse, verify

    merged: list[tuple[list[int], Any]] = []
    for index, answer in enumerate(answers):
        text = answer if "$" in answer or "\\" not in answer else f"${answer}$"
        value = parse(text, parsing_timeout=None)
        for members, seen in merged:
            if value and seen and verify(seen, value, timeout_seconds=None):
                members.append(index)
                break
        else:
            merged.append(([index], value))
    return [members for members, _ in merged]


def _cpu_used_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    """Serve jobs until stdin closes."""
    memory = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # Answers go out on the stdout this process was started with; anything a library prints
    # goes to stderr instead, so it cannot corrupt the replies.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.ERROR)
    import math_verify  # noqa: F401  (imported once, before the first job's clock starts)

    out.write(READY + "\n")
    out.flush()
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    for line in sys.stdin:
        job = json.loads(line)
        soft = int(_cpu_used_s()) + int(job["cpu_s"]) + 1
        unlimited = hard == resource.RLIM_INFINITY
        resource.setrlimit(resource.RLIMIT_CPU, (soft if unlimited else min(soft, hard), hard))
        try:
            reply: dict[str, Any] = {"merged": merge_equal(job["answers"])}
        except Exception as exc:  # a parse that ran out of memory or recursion, or a bug
            reply = {"error": type(exc).__name__}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
