"""Telling thinking from answers, whole and streamed, by a model's tags; and s1's "Wait" where
thinking ended before its minimum."""

from __future__ import annotations

import dataclasses

import pytest

from backends.base import ChatPrompt, Completion
from backends.scripted import ScriptedBackend
from strategies.context import StrategyContext
from strategies.thinking import StreamSplit, generate_thinking, split, split_completion, tags_for
from strategies.thinking_params import Thinking, ThinkingTags
from tests.factories import chat_request

TAGS = ThinkingTags()


@pytest.mark.parametrize(
    ("text", "thinking", "answer"),
    [
        ("<think>\nhmm, 7</think>\n\nAnswer: 7", "hmm, 7", "Answer: 7"),
        ("  <think>cut off mid-thought", "cut off mid-thought", ""),
        ("Answer: 7", None, "Answer: 7"),
        # The template opened the block: the output starts inside it.
        ("hmm, 7</think>Answer: 7", "hmm, 7", "Answer: 7"),
    ],
)
def test_split(text: str, thinking: str | None, answer: str) -> None:
    assert split(text, TAGS) == (thinking, answer)


def test_a_block_the_template_opened_is_thinking_until_it_closes() -> None:
    assert split("still thinking", ThinkingTags(opened_by_template=True)) == (
        "still thinking",
        "",
    )


def test_split_completion_estimates_the_thinking_tokens_by_its_share() -> None:
    completion = Completion("<think>abcdefgh</think>ab", "stop", 10)
    split_off = split_completion(completion, TAGS)
    assert (split_off.text, split_off.reasoning) == ("ab", "abcdefgh")
    assert split_off.reasoning_tokens == 8


@pytest.mark.parametrize("pieces", [["<think>a b</think>Answer"], list("<think>a b</think>Answer")])
def test_a_stream_is_split_whatever_the_pieces(pieces: list[str]) -> None:
    stream = StreamSplit(TAGS)
    fed = [stream.feed(piece) for piece in pieces] + [stream.flush()]
    assert "".join(t for t, _ in fed) == "a b"
    assert "".join(a for _, a in fed) == "Answer"


def test_a_stream_without_thinking_is_all_answer() -> None:
    stream = StreamSplit(TAGS)
    fed = [stream.feed(piece) for piece in ["Ans", "wer: 7"]] + [stream.flush()]
    assert "".join(a for _, a in fed) == "Answer: 7"
    assert all(not t for t, _ in fed)


async def test_thinking_that_ends_before_its_minimum_is_told_to_wait() -> None:
    # The scripted model thinks three tokens and closes; the minimum is five.
    backend = ScriptedBackend(["<think> a b</think>", "Answer: 7"])
    ctx = StrategyContext(backend=backend, request_id="r")
    request = chat_request(max_tokens=64)
    generation, _ = await generate_thinking(
        ctx, request.prompt, request.sampling, Thinking(min_tokens=5), TAGS
    )
    completion = generation.completions[0]
    # The first end of thinking was replaced by "Wait," and the thinking went on.
    continued = [c.prompt for c in backend.calls if "Wait," in str(c.prompt)]
    assert continued
    assert completion.reasoning is not None and "Wait," in completion.reasoning
    assert completion.reasoning_tokens >= 5


def test_a_template_told_not_to_think_opens_no_block() -> None:
    opened = ThinkingTags(opened_by_template=True)
    prompt = chat_request().prompt
    assert isinstance(prompt, ChatPrompt)
    off = dataclasses.replace(prompt, template_kwargs={"enable_thinking": False})
    assert tags_for(off, opened).opened_by_template is False
    assert tags_for(chat_request().prompt, opened).opened_by_template is True
