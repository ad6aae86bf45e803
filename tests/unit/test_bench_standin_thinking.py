"""The stand-in as a scripted reasoning model (`bench.vllm_standin.thinking`), which
`bench.thinking` measures the thinking controls on: a script picks a question's thought, probes
get the last number thought of, and only a scripted model answers a forced end with it."""

from __future__ import annotations

import re

from bench.accuracy.rows import problems
from bench.thinking.script import script, thought
from bench.vllm_standin.thinking import CLOSE, scripted_text, thinking_text

TEXT = "<think>\nMaybe 8. No: 7. Check: 7.</think>\n\nThe answer is 7."


def test_a_script_answers_the_longest_question_a_prompt_contains() -> None:
    pairs = (("What is 1 + 2?", "a"), ("Then: What is 1 + 2?", "b"))
    assert scripted_text(pairs, "system. Then: What is 1 + 2? assistant") == "b"
    assert scripted_text(pairs, "What is 1 + 2?") == "a"
    assert scripted_text(pairs, "What is 3 + 4?") is None


def test_a_probe_gets_the_last_number_thought_of() -> None:
    prefix = f"<think>\nMaybe 8.\n{CLOSE}\n\nThe final answer is \\boxed{{"
    assert thinking_text({}, TEXT, prefix) == "8}"


def test_a_forced_end_is_answered_with_the_last_number_only_by_a_scripted_model() -> None:
    forced = f"<think>\nMaybe 8.\n{CLOSE}\n\n"
    assert thinking_text({}, TEXT, forced) == "The answer is 7."
    assert thinking_text({}, TEXT, forced, settles=True) == "The answer is 8."
    # Its own end of thinking is continued as it began.
    assert thinking_text({}, TEXT, TEXT.split(CLOSE)[0] + CLOSE, settles=True) is None


def test_every_scripted_thought_settles_on_the_answer_and_double_checks_it() -> None:
    asked = problems(5)
    assert set(script(asked)) == {p.question for p in asked}
    for problem in asked:
        text = thought(problem)
        thinking, answer = text.removeprefix("<think>\n").split(f"{CLOSE}\n\n")
        assert answer == f"The answer is {problem.answer}."
        assert 200 <= len(thinking.split(" ")) <= 340
        assert re.findall(r"-?\d+", thinking)[-1] == str(problem.answer)
        # Settled early: the rest is checking.
        settled = thinking.index(f"it is {problem.answer}.")
        assert len(thinking[:settled].split(" ")) <= 180
