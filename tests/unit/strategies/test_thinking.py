"""Telling thinking from answers, whole and streamed, by a model's tags; and s1's "Wait" where
thinking ended before its minimum."""

from __future__ import annotations

import dataclasses

import pytest

from backends.base import ChatMessage, ChatPrompt, Completion, Prompt, SamplingParams, TextPrompt
from backends.scripted import ScriptedBackend
from strategies.base import InvalidParamsError, ParamsContext, StrategyRequest
from strategies.context import StrategyContext
from strategies.limits import Limits
from strategies.registry import get_strategy, parse_params
from strategies.thinking import StreamSplit, generate_thinking, split, split_completion, tags_for
from strategies.thinking_params import Thinking, ThinkingTags
from tests.factories import TableVerifier, chat_request

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


async def test_a_stop_string_ends_the_output_inside_the_thinking() -> None:
    # vLLM checks stop strings against all it generates, thinking included.
    backend = ScriptedBackend(["<think> a STOP b</think>", "Answer: 7"])
    ctx = StrategyContext(backend=backend, request_id="r")
    request = chat_request(max_tokens=64, stop=("STOP",))
    generation, _ = await generate_thinking(
        ctx, request.prompt, request.sampling, Thinking(max_tokens=32), TAGS
    )
    completion = generation.completions[0]
    assert (completion.text, completion.finish_reason) == ("", "stop")
    assert completion.reasoning == "a"
    assert len(backend.calls) == 1


async def test_thinking_that_takes_every_token_leaves_no_answer_past_max_tokens() -> None:
    backend = ScriptedBackend(["<think> a b c d e f g h i j", "Answer: 7"])
    ctx = StrategyContext(backend=backend, request_id="r")
    request = chat_request(max_tokens=6)
    generation, chains = await generate_thinking(
        ctx, request.prompt, request.sampling, Thinking(max_tokens=100), TAGS
    )
    completion = generation.completions[0]
    assert (completion.tokens, completion.finish_reason, completion.text) == (6, "length", "")
    assert chains is not None and chains.ended == (None,)
    assert len(backend.calls) == 1


async def test_a_raw_prompt_that_opens_the_block_is_answered_with_thinking() -> None:
    prompt = TextPrompt("Q: 2 + 2?\n<think>")
    assert tags_for(prompt, TAGS).opened_by_template is True
    backend = ScriptedBackend(["still thinking, 4"])
    ctx = StrategyContext(backend=backend, request_id="r")
    generation, _ = await generate_thinking(ctx, prompt, SamplingParams(max_tokens=64), None, TAGS)
    completion = generation.completions[0]
    assert (completion.reasoning, completion.text) == ("still thinking, 4", "")


async def test_a_vote_says_which_candidates_thinking_was_cut_short() -> None:
    backend = ScriptedBackend(["<think> a b c d</think>", "Answer: 4"])
    strategy = get_strategy("majority_vote")
    context = ParamsContext(verifiers=frozenset(), limits=Limits(max_n=16))
    params = parse_params(
        strategy, {"n": 2, "return_trace": True, "thinking": {"max_tokens": 2}}, context
    )
    ctx = StrategyContext(backend=backend, request_id="r")
    result = await strategy.run(chat_request(max_tokens=64), params, ctx)
    assert result.stopped_early is not None
    assert "thinking ended early" in result.stopped_early
    assert "candidate 1: thinking budget (2 tokens)" in result.stopped_early
    assert result.trace is not None
    ended = [c["thinking_ended_by"] for c in result.trace["candidates"]]
    assert ended == ["thinking budget (2 tokens)"] * 2


@pytest.mark.parametrize(
    ("prompt", "tags"),
    [
        # The raw prompt opened the block: the model's steps are thinking with no tag in them.
        (TextPrompt("Q: 2 + 2?\n<think>"), TAGS),
        # So did the template, as the server was told.
        (ChatPrompt((ChatMessage("user", "2 + 2?"),)), ThinkingTags(opened_by_template=True)),
    ],
)
async def test_a_search_refuses_thinking_a_prompt_or_template_opened(
    prompt: Prompt, tags: ThinkingTags
) -> None:
    backend = ScriptedBackend(["first I add, 4"])
    strategy = get_strategy("beam_search")
    context = ParamsContext(verifiers=frozenset({"v"}), limits=Limits(max_n=16))
    params = parse_params(strategy, {"verifier": "v", "n": 2, "beam_width": 1}, context)
    verifier = TableVerifier({"first I add, 4": 0.5})
    ctx = StrategyContext(
        backend=backend, request_id="r", verifiers={"v": verifier}, thinking_tags=tags
    )
    with pytest.raises(InvalidParamsError, match="thinks before it answers"):
        await strategy.run(StrategyRequest(prompt, SamplingParams(max_tokens=64)), params, ctx)
    assert verifier.calls == []
