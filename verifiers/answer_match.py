"""Final answers: extract them from a candidate's text and group the equivalent ones.

Extraction formats:
- `boxed`: the content of the last `\\boxed{...}` (nested braces kept);
- `last_number`: the last number (`-3`, `1,000`, `2.5`, `1/2`), thousands separators dropped;
- `regex`: the last match of a client's pattern (its first group, if it has one), run by RE2, a
  linear-time engine, so no pattern can stall the server: patterns RE2 cannot run
  (backreferences, lookaround) are refused, and so are patterns over `MAX_PATTERN_CHARS`; only
  the last `MAX_REGEX_TEXT_CHARS` of a text are searched;
- `full_text`: the whole text;
- `auto`: `boxed` if there is one, else `last_number`, else `full_text`.

Equivalence: answers are first normalised (case, surrounding `$`, trailing period, spaces);
those math-verify can parse are then merged when math-verify finds them equal, so `1/2`, `0.5`
and `\\frac{1}{2}` form one group. Grouping by normalised text runs on the event loop; only
when it leaves two or more distinct answers does math-verify compare them, in a worker process
that can be killed (`verifiers.equivalence`); a comparison cut off there (too slow, too large)
leaves the normalised text alone, and the groups say so (`AnswerGroups.is_cut_off`). Without a
pool, answers group by normalised text and numeric value only.

JSON answers (a request with `response_format`) are compared in their canonical form instead
(`canonical_json`: keys sorted, numbers by value, no spaces), exactly: `{"a": 1.0, "b": 2}` and
`{"b":2,"a":1}` are one answer, `{"a": "X"}` and `{"a": "x"}` two.

Groups keep the order in which their first member appeared, which is what the voting
strategies use to break ties: the earliest answer wins.
"""

from __future__ import annotations

import collections
import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import re2

from verifiers.equivalence import EquivalencePool

__all__ = [
    "MAX_PATTERN_CHARS",
    "MAX_REGEX_TEXT_CHARS",
    "AnswerFormat",
    "AnswerGroup",
    "AnswerGroups",
    "canonical_json",
    "compile_pattern",
    "extract_answer",
    "group_answers",
    "normalize",
]

# A client's answer pattern: longer ones are refused; texts are searched in their last part.
MAX_PATTERN_CHARS = 512
MAX_REGEX_TEXT_CHARS = 65536
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 8 << 20

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


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> Any:
    """`pattern` compiled by RE2; `ValueError` (a 400 where a client gave it) when it is too
    long or uses what a linear-time engine cannot run."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"answer_pattern is longer than {MAX_PATTERN_CHARS} characters")
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(
            f"answer_pattern is not a regex RE2 can run ({reason}); backreferences and "
            "lookaround are not supported"
        ) from exc


def _last_regex(text: str, pattern: str) -> str | None:
    compiled = compile_pattern(pattern)
    last = collections.deque(compiled.finditer(text[-MAX_REGEX_TEXT_CHARS:]), maxlen=1)
    if not last:
        return None
    value = last[0].group(1) if compiled.groups else last[0].group(0)
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


class AnswerGroups(list[AnswerGroup]):
    """Answer groups, in the order of their first members; `is_cut_off` says that math-verify
    was stopped before it compared them, so they are grouped by normalised text alone."""

    is_cut_off: bool = False


async def group_answers(
    answers: Sequence[str | None], pool: EquivalencePool | None = None, exact: bool = False
) -> AnswerGroups:
    """Group candidate indices by equivalent answer; candidates with no answer are left out.
    `exact` groups by the text as it is (canonical JSON answers), with no folding; `pool`
    compares what text and value leave apart with math-verify."""
    if exact:
        by_text: dict[str, AnswerGroup] = {}
        for index, answer in enumerate(answers):
            if answer is not None:
                by_text.setdefault(answer, AnswerGroup(answer)).members.append(index)
        return AnswerGroups(by_text.values())
    # Exact normalised text first, on the loop: cheap, and when every answer agrees (the
    # common case) it is the whole grouping; it also bounds the math comparisons to one per
    # pair of distinct texts.
    groups = _group_by_text(answers)
    if len(groups) < 2:
        return AnswerGroups(groups)
    # Plain numbers (most final answers) are equal when their values are: no sympy needed,
    # and no trip to a worker when nothing else is left to compare.
    groups = _merge_numbers(groups)
    if (
        pool is None
        or len(groups) < 2
        or all(_PLAIN_NUMBER.fullmatch(normalize(g.answer)) for g in groups)
    ):
        return AnswerGroups(groups)
    merged = await pool.merge([g.answer for g in groups])
    if merged is None:
        cut = AnswerGroups(groups)
        cut.is_cut_off = True
        return cut
    return AnswerGroups(_merged(groups, merged))


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


def _merged(groups: Sequence[AnswerGroup], merged: Sequence[Sequence[int]]) -> list[AnswerGroup]:
    """`groups` merged as the worker grouped their indices; the first of each stands for it."""
    out = [
        AnswerGroup(groups[ids[0]].answer, sorted(m for i in ids for m in groups[i].members))
        for ids in merged
    ]
    return sorted(out, key=lambda g: g.members[0])
