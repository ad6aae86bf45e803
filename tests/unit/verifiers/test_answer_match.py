"""Answer extraction formats and equivalence grouping."""

from __future__ import annotations

import asyncio

import pytest

from verifiers.answer_match import AnswerFormat, extract_answer, group_answers, normalize


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


async def test_math_equivalents_share_a_group_in_first_seen_order() -> None:
    groups = await group_answers(
        ["7", "1/2", "0.5", None, "\\frac{1}{2}", "7.0", "Paris", "paris."]
    )
    assert [(g.answer, g.members) for g in groups] == [
        ("7", [0, 5]),
        ("1/2", [1, 2, 4]),
        ("Paris", [6, 7]),
    ]


async def test_text_only_grouping_when_math_verify_is_too_slow() -> None:
    groups = await group_answers(["1/2", "0.5", "1/2"], timeout_s=0)
    assert [(g.answer, g.members) for g in groups] == [("1/2", [0, 2]), ("0.5", [1])]


@pytest.fixture
def no_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_thread(*args: object, **kwargs: object) -> None:
        raise AssertionError("grouping went to a worker thread")

    monkeypatch.setattr(asyncio, "to_thread", no_thread)


@pytest.mark.usefixtures("no_worker_thread")
async def test_answers_equal_as_text_are_grouped_without_a_worker_thread() -> None:
    groups = await group_answers(["$4$", None, "4.", " 4"])
    assert [(g.answer, g.members) for g in groups] == [("$4$", [0, 2, 3])]
    assert await group_answers([None, None]) == []


@pytest.mark.usefixtures("no_worker_thread")
async def test_plain_numbers_are_grouped_by_value_without_a_worker_thread() -> None:
    groups = await group_answers(["5", "4", "4.0", "-3", "5.00", "04"])
    assert [(g.answer, g.members) for g in groups] == [
        ("5", [0, 4]),
        ("4", [1, 2, 5]),
        ("-3", [3]),
    ]
