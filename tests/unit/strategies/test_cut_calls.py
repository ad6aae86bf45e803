"""Calls cut off before their usage arrives are still counted: a stream by the tokens its
deltas carried, a plain call cancelled or timed out at the most it could have generated, a
verifier call at the least it read (which keys are charged and the response's usage leaves
out)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from backends.base import ChatMessage, ChatPrompt, SamplingParams, StreamDelta
from backends.errors import BackendResponseError
from backends.scripted import ScriptedBackend
from strategies.accounting import ModelPrice
from strategies.context import StrategyContext
from verifiers.base import Candidate, Scores, Verifier, VerifierError
from verifiers.registry import GuardedVerifier

PROMPT = ChatPrompt((ChatMessage("user", "Count to eight."),))
TEXT = "one two three four five six seven eight"


async def whole_prompt_tokens() -> int:
    generation = await ScriptedBackend([TEXT]).generate(PROMPT, SamplingParams(max_tokens=64))
    return generation.prompt_tokens


@pytest.mark.parametrize("call", ["generate_streamed", "generate_until"])
async def test_a_stream_cut_off_counts_the_tokens_that_arrived(call: str) -> None:
    ctx = StrategyContext(backend=ScriptedBackend([TEXT], delay_s=0.01), request_id="r")
    params = SamplingParams(max_tokens=64, logprobs=0)
    seen: list[StreamDelta] = []
    three = asyncio.Event()

    def arrive(delta: StreamDelta) -> bool:
        seen.append(delta)
        if len(seen) == 3:
            three.set()
        return False

    async def on_delta(delta: StreamDelta) -> None:
        arrive(delta)

    task: asyncio.Task[object]
    if call == "generate_streamed":
        task = asyncio.create_task(ctx.generate_streamed(PROMPT, params, on_delta))
    else:
        task = asyncio.create_task(ctx.generate_until(PROMPT, params, arrive, prompt_tokens=0))
    await three.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ctx.usage.completion_tokens == 3
    assert ctx.usage.prompt_tokens == await whole_prompt_tokens() > 0
    assert ctx.usage.calls == 1 and ctx.usage.unreported_tokens == 0


async def test_a_plain_call_cut_off_is_charged_at_most_what_it_could_generate() -> None:
    ctx = StrategyContext(backend=ScriptedBackend([TEXT], delay_s=10), request_id="r")
    task = asyncio.create_task(ctx.generate(PROMPT, SamplingParams(n=2, max_tokens=16)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ctx.usage.unreported_tokens == 2 * 16
    assert ctx.usage.completion_tokens == 0  # the response's usage stays what was reported
    price = ModelPrice(completion=1_000_000.0)
    assert ctx.usage.charge(price) == (32, 32.0)
    assert ctx.usage.charge(None) == (32, 0.0)


async def test_a_call_that_failed_generated_nothing() -> None:
    backend = ScriptedBackend([TEXT], error=BackendResponseError("the engine died"))
    ctx = StrategyContext(backend=backend, request_id="r")
    with pytest.raises(BackendResponseError):
        await ctx.generate(PROMPT, SamplingParams(max_tokens=16))
    assert ctx.usage.charge(None) == (0, 0.0)


class SlowVerifier:
    """A verifier that answers only after a long while, or fails at once."""

    logprobs = None

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    async def score(self, question: str, candidates: Sequence[Candidate]) -> Scores:
        if self.fail:
            raise BackendResponseError("the reward model died")
        await asyncio.sleep(10)
        raise AssertionError("never answers")


QUESTION = "What is 2 + 2?"  # 14 characters
CANDIDATES = [Candidate("it is 4"), Candidate("so 4 it is")]  # 7 and 10


async def test_a_verifier_call_cut_off_is_charged_what_it_read_at_least() -> None:
    # Cut verifier calls were charged nothing: their tokens come with their answer.
    verifiers: dict[str, Verifier] = {
        "slow": SlowVerifier(),
        "timed": GuardedVerifier("timed", SlowVerifier(), timeout_s=0.01),
        "broken": GuardedVerifier("broken", SlowVerifier(fail=True), timeout_s=5),
    }
    ctx = StrategyContext(backend=ScriptedBackend([TEXT]), request_id="r", verifiers=verifiers)
    task = asyncio.create_task(ctx.verify("slow", QUESTION, CANDIDATES))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The question read with each candidate, at 3 characters a token, rounded up.
    read = 2 * (14 // 3 + 1) + (7 // 3 + 1) + (10 // 3 + 1)
    assert ctx.usage.unreported_tokens == read
    with pytest.raises(VerifierError, match="timed out"):
        await ctx.verify("timed", QUESTION, CANDIDATES)
    assert ctx.usage.unreported_tokens == 2 * read
    # A call that failed read nothing the charge need count.
    with pytest.raises(VerifierError, match="died"):
        await ctx.verify("broken", QUESTION, CANDIDATES)
    assert ctx.usage.unreported_tokens == 2 * read
    assert ctx.usage.verifier_tokens == 0
