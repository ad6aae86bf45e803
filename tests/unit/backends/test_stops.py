"""Stop strings with vLLM's semantics."""

from __future__ import annotations

import pytest

from backends.stops import find_stop, holdback, truncate_at_stop


def test_earliest_stop_wins() -> None:
    assert find_stop("a END b STOP", ["STOP", "END"]) == (2, "END")
    assert find_stop("abc", ["x"]) is None


@pytest.mark.parametrize(
    ("include", "expected"), [(False, ("Step 1", True)), (True, ("Step 1\n\n", True))]
)
def test_truncate(include: bool, expected: tuple[str, bool]) -> None:
    assert truncate_at_stop("Step 1\n\nStep 2", ["\n\n"], include) == expected


@pytest.mark.parametrize(
    ("text", "stops", "held"),
    [
        ("abc</", ["</end>"], 2),
        ("abc", ["</end>"], 0),
        ("ab<", ["<x>"], 1),
        ("ab", ["<x>"], 0),
        ("x\n", ["\n\n"], 1),
    ],
)
def test_holdback_keeps_what_could_become_a_stop(text: str, stops: list[str], held: int) -> None:
    assert holdback(text, stops) == held
