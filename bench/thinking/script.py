"""The stand-in's scripted thoughts: per problem, a reasoning model's trace that tries wrong
numbers, settles on the answer, and then spends most of its length double-checking it.

One stand-in token is one word. Each thought, drawn from the problem's seed:

1. restates the numbers of the question;
2. tries wrong numbers near the answer, a different one every few words (so probes do not
   agree while it explores), until a settle point drawn uniformly from `SETTLE_WORDS`;
3. settles on the answer; one problem in `REVISE_ONE_IN` first settles on a wrong number and
   holds it for `REVISE_HOLD_WORDS` words before it finds its mistake (so probes that agree too
   soon stop on the wrong number);
4. double-checks the answer until its length, drawn uniformly from `TOTAL_WORDS`;
5. closes the block and answers "The answer is N."

Asked mid-thought (a probe), the stand-in gives the last number thought of; cut off by a budget,
it answers with that number too (`bench.vllm_standin.thinking`). So what each control scores on
the stand-in follows from these numbers: it checks the mechanism, not that a control is safe
on a real model.
"""

from __future__ import annotations

import random
import re

from bench.accuracy.rows import Problem

__all__ = ["REVISE_HOLD_WORDS", "REVISE_ONE_IN", "SETTLE_WORDS", "TOTAL_WORDS", "script", "thought"]

SETTLE_WORDS = (16, 120)
TOTAL_WORDS = (200, 320)
REVISE_ONE_IN = 10
REVISE_HOLD_WORDS = 24
_NUMBER = re.compile(r"-?\d+")
_TRIES = (
    "Maybe it is {x}.",
    "Could it be {x}? That does not fit.",
    "A first guess gives {x}, but I am not sure of it.",
    "If I add the wrong way I get {x}.",
)
_CHECKS = (
    "Check: counting again gives {x}.",
    "Let me verify once more, slowly: {x}.",
    "Another way to see it also gives {x}.",
    "Nothing in the question changes that.",
    "I should be careful and recheck every step.",
    "Working backwards from the end also lands on {x}.",
)


def _near(answer: int, rng: random.Random, tried: list[int]) -> int:
    """A wrong number close to `answer`, never negative, not `tried` yet while others are left
    (then any but the last one tried)."""
    close = [answer + d for d in range(-9, 10) if d and answer + d >= 0]
    fresh = [x for x in close if x not in tried] or [x for x in close if x != tried[-1]]
    tried.append(rng.choice(fresh))
    return tried[-1]


def thought(problem: Problem) -> str:
    """What the stand-in writes for `problem`: its thinking block, then its answer."""
    rng = random.Random(problem.seed)
    answer = problem.answer
    sentences = [f"The question gives {' and '.join(_NUMBER.findall(problem.question))}."]
    settle = rng.randint(*SETTLE_WORDS)
    total = rng.randint(*TOTAL_WORDS)
    revises = rng.randrange(REVISE_ONE_IN) == 0

    def length() -> int:
        return len(" ".join(sentences).split(" "))

    tried: list[int] = []
    while length() < settle:
        sentences.append(rng.choice(_TRIES).format(x=_near(answer, rng, tried)))
    if revises:
        wrong = _near(answer, rng, tried)
        sentences.append(f"So it is {wrong}.")
        held = length() + REVISE_HOLD_WORDS
        while length() < held:
            sentences.append(rng.choice(_CHECKS).format(x=wrong))
        sentences.append(f"Wait, that check fails: it is {answer}.")
    else:
        sentences.append(f"So it is {answer}.")
    while length() < total:
        sentences.append(rng.choice(_CHECKS).format(x=answer))
    return f"<think>\n{' '.join(sentences)}</think>\n\nThe answer is {answer}."


def script(problems: list[Problem]) -> dict[str, str]:
    """The stand-in's `--script`: each problem's question and thought."""
    return {p.question: thought(p) for p in problems}
