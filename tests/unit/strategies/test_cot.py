"""`cot`: the instruction lands where the model reads it; the split is the same streamed or not."""

from __future__ import annotations

import pytest

from backends.base import ChatMessage, ChatPrompt, TextPrompt
from backends.scripted import ScriptedBackend, tokenize
from strategies.base import ChoiceDelta
from strategies.context import StrategyContext
from strategies.cot import (
    DEFAULT_INSTRUCTION,
    AnswerSplitter,
    ChainOfThought,
    CoTParams,
    with_instruction,
)
from tests.factories import chat_request

REASONING = "First add 2 and 2.\nThat makes 4.\n"


@pytest.mark.parametrize(
    ("text", "reasoning", "answer"),
    [
        (REASONING + "Answer: 4", REASONING, "4"),
        (REASONING + "answer:   4\n", REASONING, "4\n"),
        ("Answer: 4. Answer: 5", "", "4. Answer: 5"),
        ("It is 4.\nSo the result is 4", "It is 4.\n", "So the result is 4"),
        ("It is 4.\nSo the result is 4\n\n", "It is 4.\n", "So the result is 4"),
        (
            "Add 3 and 4. That is 7. So the answer is 7.",
            "Add 3 and 4. That is 7. ",
            "So the answer is 7.",
        ),
        ("Seven.", "", "Seven."),
        ("", "", ""),
        ("İstanbul is big. ANSWER: 7", "İstanbul is big. ", "7"),
    ],
)
def test_split_whole_and_streamed_agree(text: str, reasoning: str, answer: str) -> None:
    whole = AnswerSplitter("Answer:")
    first = whole.feed(text)
    last = whole.finish()
    assert (whole.reasoning, whole.answer) == (reasoning, answer)
    assert first[0] + last[0] == reasoning
    assert first[1] + last[1] == answer
    # Fed one character at a time, including through the marker, the output is the same.
    pieces = AnswerSplitter("Answer:")
    outputs = [pieces.feed(ch) for ch in text] + [pieces.finish()]
    assert "".join(r for r, _ in outputs) == reasoning
    assert "".join(a for _, a in outputs) == answer


def test_instruction_joins_an_existing_system_message() -> None:
    prompt = ChatPrompt((ChatMessage("system", "Be brief."), ChatMessage("user", "q")))
    changed = with_instruction(prompt, "Think.")
    assert isinstance(changed, ChatPrompt)
    assert changed.messages[0] == ChatMessage("system", "Be brief.\n\nThink.")
    assert changed.messages[1:] == prompt.messages[1:]


def test_instruction_becomes_the_system_message() -> None:
    prompt = ChatPrompt((ChatMessage("user", "q"),))
    changed = with_instruction(prompt, "Think.")
    assert isinstance(changed, ChatPrompt)
    assert changed.messages == (ChatMessage("system", "Think."), ChatMessage("user", "q"))


def test_instruction_follows_a_raw_prompt() -> None:
    assert with_instruction(TextPrompt("2+2?"), "Think.") == TextPrompt("2+2?\nThink.\n")


async def test_run_returns_reasoning_apart_and_counts_reasoning_tokens() -> None:
    backend = ScriptedBackend([REASONING + "Answer: 4"])
    ctx = StrategyContext(backend=backend, request_id="r")
    result = await ChainOfThought().run(chat_request(), CoTParams(), ctx)
    (choice,) = result.choices
    assert (choice.reasoning, choice.content) == (REASONING, "4")
    generated = len(tokenize(REASONING + "Answer: 4"))
    assert result.usage.completion_tokens == generated
    assert result.reasoning_tokens == generated - 1
    sent = backend.calls[0].prompt
    assert isinstance(sent, ChatPrompt)
    assert sent.messages[0] == ChatMessage("system", DEFAULT_INSTRUCTION)


async def test_streamed_run_emits_reasoning_then_answer() -> None:
    backend = ScriptedBackend([REASONING + "Answer: 4"])
    deltas: list[ChoiceDelta] = []

    async def sink(delta: ChoiceDelta) -> None:
        deltas.append(delta)

    ctx = StrategyContext(backend=backend, request_id="r", sink=sink)
    result = await ChainOfThought().run(chat_request(), CoTParams(), ctx)
    assert "".join(d.reasoning for d in deltas) == REASONING
    assert "".join(d.content for d in deltas) == "4"
    # No answer text may precede the end of the reasoning.
    first_answer = next(i for i, d in enumerate(deltas) if d.content)
    assert not any(d.reasoning for d in deltas[first_answer:])
    assert result.choices[0].content == "4"
