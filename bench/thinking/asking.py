"""One problem under one setting, asked of the gateway, and what came back: right or wrong,
and the thinking and probe tokens it spent.

Every request is a `majority_vote` of `n` candidates (1 by default): its trace reports each
candidate's thinking tokens apart from its answer's, which `none` does not; the probes' tokens
are the rest of `usage.completion_tokens`. The answer is the last number of the message, as in
`bench.accuracy`.

A raw prompt opens the thinking block itself. Under a control, the gateway takes the block as
begun, so a candidate that never closes it has thought all it wrote, and answers only when the
control closes it. Without a control, the gateway splits by the tags alone and returns such a
candidate's thinking as its answer, with no thinking tokens. To compare like with like, a
candidate of full thinking that never closed its block is read here as the controls read it:
all of its tokens are thinking, and it has no answer (`unclosed`; `served_correct` keeps what
the gateway's answer scored).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import openai

from bench.accuracy.rows import Problem, last_number
from bench.thinking.presets import Setting, System

__all__ = ["FEW_SHOT", "Answer", "Asking", "ask", "raw_prompt"]

# SmolLM2 does not think by itself: a worked example (not a benchmark problem: those add single
# digits) shows a thought that checks its answer, and the prompt ends inside the next one's open
# block, which the gateway takes as thinking begun. The block ends as the gateway's forced end
# does ("\n</think>\n\n"), so that a capped thought is answered the way a finished one is. One
# example, not one per tier: every call of a chain prefills the prompt again, and on the CPU a
# 230-token prompt of three examples took 4-8 s to prefill against 1 s for this one (75 tokens),
# which also closed its block more often (on the first 6 problems: 6 times against 3).
EXAMPLES = (("What is 12 + 7?", "12 + 7 = 19. Check: 7 + 12 = 19. Yes, 19.", 19),)
FEW_SHOT = "".join(
    f"Question: {question}\n<think>\n{thought}\n</think>\n\nThe answer is {answer}.\n\n"
    for question, thought, answer in EXAMPLES
)


def raw_prompt(question: str) -> str:
    """The few-shot prompt for `question`, ending in its open thinking block."""
    return f"{FEW_SHOT}Question: {question}\n<think>\n"


# Where a raw prompt's answer ends: the model goes on to the next example.
RAW_STOP = ["Question:"]


@dataclass(frozen=True)
class Asking:
    """How every request of a run is made."""

    client: openai.AsyncOpenAI
    model: str
    system: System
    max_tokens: int
    temperature: float
    n: int


@dataclass(frozen=True)
class Answer:
    """What one request scored and spent."""

    correct: bool
    # Thinking tokens of all candidates, and the most one of them thought.
    thinking: int
    most: int
    probes: int
    seconds: float
    stopped_early: str | None
    # Full thinking on a raw prompt: candidates that never closed their block (read as all
    # thinking, and no answer), and whether the answer as served was right.
    unclosed: int = 0
    served_correct: bool = False


async def ask(asking: Asking, problem: Problem, setting: Setting) -> Answer:
    """`problem` under `setting`, through the gateway."""
    params: dict[str, Any] = {"n": asking.n, "answer_format": "last_number", "return_trace": True}
    if setting.thinking is not None:
        params["thinking"] = setting.thinking
    common: dict[str, Any] = {
        "model": asking.model,
        "max_tokens": asking.max_tokens,
        "temperature": asking.temperature,
        "seed": problem.seed,
        "extra_body": {"reasoning_strategy": "majority_vote", "reasoning_params": params},
    }
    started = time.perf_counter()
    response: Any
    if asking.system.api == "chat":
        messages: Any = [{"role": r, "content": c} for r, c in problem.messages()]
        response = await asking.client.chat.completions.create(messages=messages, **common)
        choice = response.choices[0].message
        content = choice.content
    else:
        prompt = raw_prompt(problem.question)
        response = await asking.client.completions.create(prompt=prompt, stop=RAW_STOP, **common)
        choice = response.choices[0]
        content = choice.text
    seconds = time.perf_counter() - started
    extra = response.model_extra or {}
    candidates = extra["reasoning_trace"]["candidates"]
    served_correct = last_number(content) == problem.answer
    # Full thinking on a raw prompt: a block never closed is thinking, as the controls read it
    # (a block closed at once reads so too: the trace shows no empty thought).
    is_unclosed = [
        asking.system.api == "raw" and setting.thinking is None and not c.get("thinking")
        for c in candidates
    ]
    thoughts = [
        int(c["tokens"]) if unclosed else int(c.get("thinking_tokens") or 0)
        for c, unclosed in zip(candidates, is_unclosed, strict=True)
    ]
    if any(is_unclosed) and not (choice.model_extra or {}).get("reasoning"):
        content = None
    return Answer(
        correct=last_number(content) == problem.answer,
        thinking=sum(thoughts),
        most=max(thoughts, default=0),
        probes=max(0, response.usage.completion_tokens - sum(int(c["tokens"]) for c in candidates)),
        seconds=seconds,
        stopped_early=extra.get("reasoning_stopped_early"),
        unclosed=sum(is_unclosed),
        served_correct=served_correct,
    )
