"""Answer extraction formats and equivalence grouping."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from verifiers.answer_match import (
    AnswerFormat,
    compile_pattern,
    extract_answer,
    group_answers,
    normalize,
)
from verifiers.equivalence import EquivalencePool


@pytest.mark.parametrize(
    ("text", "fmt", "answer"),
    [
        ("so \\boxed{\\frac{1}{2}} and \\boxed{3}", "boxed", "3"),
        ("\\boxed{\\frac{a}{\\sqrt{b}}}", "boxed", "\\frac{a}{\\sqrt{b}}"),
        ("no box", "boxed", None),
        ("it costs 1,250.5 dollars, not 3", "last_number", "3"),
        ("total: 1,250.5", "last_number", "1250.5"),
        ("x = -7", "last_number", "-7"),
        ("half is 1 / 2", "last_number", "1/2"),
        ("nothing here", "last_number", None),
        ("  Paris.  ", "full_text", "Paris."),
        ("\\boxed{5} or 6", "auto", "5"),
        ("maybe 6", "auto", "6"),
        ("Paris", "auto", "Paris"),
        ("", "auto", None),
    ],
)
def test_extract(text: str, fmt: AnswerFormat, answer: str | None) -> None:
    assert extract_answer(text, fmt, None) == answer


def test_regex_uses_the_first_group_of_the_last_match() -> None:
    assert extract_answer("A: x then A: y", "regex", r"A: (\w)") == "y"
    assert extract_answer("A: x then A: y", "regex", r"A: \w") == "A: y"


def test_normalize() -> None:
    assert normalize(" $\\text{Paris}$. ") == "paris"


@pytest.fixture
async def pool() -> AsyncIterator[EquivalencePool]:
    workers = EquivalencePool(timeout_s=5.0)
    try:
        yield workers
    finally:
        await workers.aclose()


async def test_math_equivalents_share_a_group_in_first_seen_order(pool: EquivalencePool) -> None:
    groups = await group_answers(
        ["7", "1/2", "0.5", None, "\\frac{1}{2}", "7.0", "Paris", "paris."], pool
    )
    assert [(g.answer, g.members) for g in groups] == [
        ("7", [0, 5]),
        ("1/2", [1, 2, 4]),
        ("Paris", [6, 7]),
    ]
    assert not groups.is_cut_off


async def test_a_comparison_that_would_run_for_minutes_is_killed_and_flagged() -> None:
    # math-verify evaluates this factorial: minutes of sympy, in a thread nobody could stop.
    pool = EquivalencePool(timeout_s=1.0)
    try:
        answers = ["\\left(10^{9}\\right)!", "2", "\\left(10^{9}\\right)!"]
        started = time.monotonic()
        lags = asyncio.create_task(_loop_lags(seconds=1.5))
        groups = await group_answers(answers, pool)
        lag = await lags
        assert groups.is_cut_off and pool.killed == 1
        assert [(g.answer, g.members) for g in groups] == [(answers[0], [0, 2]), ("2", [1])]
        # The loop went on while it ran, and the cut came at the timeout (plus the worker's
        # start), not when sympy finished.
        assert lag < 0.5
        assert time.monotonic() - started < 60
        # A fresh worker takes the next comparison.
        again = await group_answers(["1/2", "0.5"], pool)
        assert [g.members for g in again] == [[0, 1]] and not again.is_cut_off
    finally:
        await pool.aclose()


async def _loop_lags(seconds: float) -> float:
    """The longest the event loop left a 10 ms sleep waiting, over `seconds`."""
    worst, end = 0.0, time.monotonic() + seconds
    while time.monotonic() < end:
        before = time.monotonic()
        await asyncio.sleep(0.01)
        worst = max(worst, time.monotonic() - before - 0.01)
    return worst


async def test_answers_over_the_size_cap_are_compared_as_text(pool: EquivalencePool) -> None:
    long = "1/2" + " " * 300 + "+ 0"
    groups = await group_answers([long, "0.5"], pool)
    assert groups.is_cut_off and [g.members for g in groups] == [[0], [1]]


class Refusing(EquivalencePool):
    """A pool that fails the test if asked."""

    async def merge(self, answers: Sequence[str]) -> list[list[int]] | None:
        raise AssertionError("grouping went to math-verify")


async def test_answers_equal_as_text_are_grouped_without_math_verify() -> None:
    groups = await group_answers(["$4$", None, "4.", " 4"], Refusing())
    assert [(g.answer, g.members) for g in groups] == [("$4$", [0, 2, 3])]
    assert await group_answers([None, None], Refusing()) == []


async def test_plain_numbers_are_grouped_by_value_without_math_verify() -> None:
    groups = await group_answers(["5", "4", "4.0", "-3", "5.00", "04"], Refusing())
    assert [(g.answer, g.members) for g in groups] == [
        ("5", [0, 4]),
        ("4", [1, 2, 5]),
        ("-3", [3]),
    ]


def test_a_catastrophic_pattern_runs_in_linear_time() -> None:
    # Python's backtracking `re` takes 14 s on 25 characters with this pattern, doubling with
    # each one more; run apart, so that a regression fails by its timeout instead of hanging.
    probe = (
        "from verifiers.answer_match import extract_answer\n"
        "print(extract_answer('a' * 5000, 'regex', '(?:.|.)*\\x00'))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [(r"(a)\1", "backreferences"), (r"(?=a)b", "lookaround"), ("a" * 600, "longer than")],
)
def test_patterns_a_linear_engine_cannot_run_are_refused(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        compile_pattern(pattern)
