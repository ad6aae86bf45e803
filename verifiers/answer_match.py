"""Final answers: extract them from a candidate's text and group the equivalent ones.

Extraction formats:
- `boxed`: the content of the last `\\boxed{...}` (nested braces kept);
- `last_number`: the last number (`-3`, `1,000`, `2.5`, `1/2`), thousands separators dropped;
- `regex`: the last match of a pattern (its first group, if it has one);
- `full_text`: the whole text;
- `auto`: `boxed` if there is one, else `last_number`, else `full_text`.

Equivalence: answers are first normalised (case, surrounding `$`, trailing period, spaces);
those math-verify can parse are then merged when math-verify finds them equal, so `1/2`, `0.5`
and `\\frac{1}{2}` form one group. Grouping by normalised text runs on the event loop; only
when it leaves two or more distinct answers does math-verify compare them, in a worker thread
(it is sympy underneath and can be slow) with its signal-based timeouts off; a comparison that
takes longer than `timeout_s` falls back to the normalised text alone.

JSON answers (a request with `response_format`) are compared in their canonical form instead
(`canonical_json`: keys sorted, numbers by value, no spaces), exactly: `{"a": 1.0, "b": 2}` and
`{"b":2,"a":1}` are one answer, `{"a": "X"}` and `{"a": "x"}` two.

Groups keep the order in which their first member appeared, which is what the voting
strategies use to break ties: the earliest answer wins.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from math_verify import parse, verify

__all__ = [
    "AnswerFormat",
    "AnswerGroup",
    "canonical_json",
    "extract_answer",
    "group_answers",
    "normalize",
]

logger = logging.getLogger(__name__)
# math-verify warns on every call made with its timeouts off, which is how we must call it.
logging.getLogger("math_verify").setLevel(logging.ERROR)

AnswerFormat = Literal["auto", "boxed", "last_number", "regex", "full_text"]

_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:\s*/\s*\d+)?")
# Numbers whose value Decimal reads exactly as math-verify does: no thousands separators,
# fractions or exponents.
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_answer(text: str, fmt: AnswerFormat, pattern: str | None = None) -> str | None:
    """The final answer in `text`, or None when the format finds none."""
    match fmt:
        case "boxed":
            return _last_boxed(text)
        case "last_number":
            return _last_number(text)
        case "regex":
            if pattern is None:
                raise ValueError("the regex answer format needs a pattern")
            return _last_regex(text, pattern)
        case "full_text":
            return text.strip() or None
        case "auto":
            return _last_boxed(text) or _last_number(text) or (text.strip() or None)


def _last_boxed(text: str) -> str | None:
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i].strip() or None
    return None


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    if not numbers:
        return None
    return re.sub(r"\s+", "", numbers[-1]).replace(",", "")


def _last_regex(text: str, pattern: str) -> str | None:
    matches = list(re.finditer(pattern, text))
    if not matches:
        return None
    last = matches[-1]
    value = last.group(1) if last.re.groups else last.group(0)
    return value.strip() if value else None


def canonical_json(text: str) -> str | None:
    """`text` as canonical JSON (keys sorted, numbers by value: `1.0`, `1` and `1e0` alike,
    compact separators), or None when it is not JSON (e.g. cut off by `max_tokens`)."""
    try:
        value = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except ValueError:
        return None
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def normalize(answer: str) -> str:
    """The answer with case, surrounding `$`, `\\text{}`, a trailing period and spaces folded."""
    value = answer.strip().rstrip(".").strip().strip("$").strip()
    value = re.sub(r"\\text\{([^{}]*)\}", r"\1", value)
    value = value.rstrip(".").strip()
    return re.sub(r"\s+", " ", value).lower()


@dataclass
class AnswerGroup:
    """Equivalent answers: the first one seen stands for the group."""

    answer: str
    members: list[int] = field(default_factory=list)


async def group_answers(
    answers: Sequence[str | None], timeout_s: float = 10.0, exact: bool = False
) -> list[AnswerGroup]:
    """Group candidate indices by equivalent answer; candidates with no answer are left out.
    `exact` groups by the text as it is (canonical JSON answers), with no folding."""
    if exact:
        by_text: dict[str, AnswerGroup] = {}
        for index, answer in enumerate(answers):
            if answer is not None:
                by_text.setdefault(answer, AnswerGroup(answer)).members.append(index)
        return list(by_text.values())
    # Exact normalised text first, on the loop: cheap, and when every answer agrees (the
    # common case) it is the whole grouping; it also bounds the math comparisons to one per
    # pair of distinct texts.
    groups = _group_by_text(answers)
    if len(groups) < 2:
        return groups
    # Plain numbers (most final answers) are equal when their values are: no sympy needed,
    # and no trip to a thread when nothing else is left to compare.
    groups = _merge_numbers(groups)
    if len(groups) < 2 or all(_PLAIN_NUMBER.fullmatch(normalize(g.answer)) for g in groups):
        return groups
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.to_thread(_merge_equal, groups)
    except TimeoutError:
        logger.warning("math-verify took over %.0f s; grouping answers by text only", timeout_s)
        return groups


def _group_by_text(answers: Sequence[str | None]) -> list[AnswerGroup]:
    by_key: dict[str, AnswerGroup] = {}
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        by_key.setdefault(normalize(answer), AnswerGroup(answer)).members.append(index)
    return list(by_key.values())


def _merge_numbers(groups: list[AnswerGroup]) -> list[AnswerGroup]:
    by_value: dict[Decimal, AnswerGroup] = {}
    merged: list[AnswerGroup] = []
    for group in groups:
        if not _PLAIN_NUMBER.fullmatch(key := normalize(group.answer)):
            merged.append(group)
        elif (home := by_value.get(Decimal(key))) is None:
            by_value[Decimal(key)] = group
            merged.append(group)
        else:
            home.members.extend(group.members)
            home.members.sort()
    return sorted(merged, key=lambda g: g.members[0])


def _merge_equal(groups: list[AnswerGroup]) -> list[AnswerGroup]:
    # Runs in a worker thread; it merges into fresh groups, so the caller's stay as they were
    # if it is abandoned at the timeout.
    parsed = [_parse(group.answer) for group in groups]
    merged: list[tuple[AnswerGroup, Any]] = []
    for group, value in zip(groups, parsed, strict=True):
        home = next((m for m, v in merged if value and v and _equal(v, value)), None)
        if home is None:
            merged.append((AnswerGroup(group.answer, list(group.members)), value))
        else:
            home.members.extend(group.members)
    for group, _ in merged:
        group.members.sort()
    return sorted((g for g, _ in merged), key=lambda g: g.members[0])


def _parse(answer: str) -> Any:
    text = answer if "$" in answer or "\\" not in answer else f"${answer}$"
    return parse(text, parsing_timeout=None)


def _equal(a: Any, b: Any) -> bool:
    return bool(verify(a, b, timeout_seconds=None))
