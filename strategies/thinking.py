"""Thinking as a part of a candidate: told apart from the answer, capped, and cut short once the
answer is settled.

A reasoning model thinks first, in a block its chat template or the model itself opens
(`<think>` ... `</think>` by default: `ThinkingTags`), then answers after it.

1. **Split.** vLLM's reasoning parser (`--reasoning-parser`) splits the thinking off into
   `reasoning`; where no parser did, `split` does by the tags. Answers are extracted from what
   follows the thinking, never from the thinking.
2. **Budget forcing**, after Muennighoff et al., "s1: Simple test-time scaling" (2025): a
   candidate thinks at most `max_tokens`; one still thinking there has its block closed by the
   server (`FORCE_CLOSE`), and the model answers from what it thought. Below `min_tokens`, an
   end of thinking is replaced by "Wait," and the thinking goes on.
3. **Probing**, after Fu et al., "Efficiently Serving LLM Reasoning Programs with Certaindex"
   (Dynasor-CoT, 2025): every `probe.interval` thinking tokens, a short greedy probe asks for
   the answer from the thinking so far (`PROBE`; its prefix is the thinking, which the model
   server's prefix cache holds); when the last `probe.agree` probes give the same answer, the
   thinking stops there and the candidate answers.

Each candidate under a control is a chain of calls continuing its own prefix
(`strategies.prefixes.continuation`); without one, candidates are sampled in one call and only
split. A chain counts its thinking tokens exactly (each call reports its own); a split without
a chain estimates them by the share of the thinking in the text.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backends.base import ChatPrompt, Completion, Generation, Prompt, SamplingParams, TextPrompt
from strategies.context import StrategyContext
from strategies.prefixes import continuation
from strategies.thinking_params import Probe, Thinking, ThinkingTags
from verifiers.answer_match import normalize

__all__ = [
    "FORCE_CLOSE",
    "PROBE",
    "WAIT",
    "StreamSplit",
    "ThoughtChains",
    "generate_thinking",
    "split",
    "split_completion",
    "tags_for",
    "thinking_stopped",
]

# What the server writes to end a thinking block the model did not end (s1's forced end).
FORCE_CLOSE = "\n{close}\n\n"
# What a probe appends to the thinking so far: the answer is asked for at once (Dynasor-CoT).
PROBE = "\n{close}\n\nThe final answer is \\boxed{{"
# What s1 appends instead of an end of thinking that came too soon.
WAIT = "\nWait,"


def tags_for(prompt: Prompt, tags: ThinkingTags) -> ThinkingTags:
    """The model's tags as they apply to `prompt`: a template told not to think
    (`enable_thinking` false) opens no block, whatever it does otherwise; a raw prompt that ends
    with the opening tag has opened it, as a template would."""
    if isinstance(prompt, TextPrompt) and prompt.text.rstrip().endswith(tags.open):
        return dataclasses.replace(tags, opened_by_template=True)
    if (
        tags.opened_by_template
        and isinstance(prompt, ChatPrompt)
        and prompt.template_kwargs.get("enable_thinking") is False
    ):
        return dataclasses.replace(tags, opened_by_template=False)
    return tags


def split(text: str, tags: ThinkingTags) -> tuple[str | None, str]:
    """The thinking in `text` (None: there is none) and the answer after it. A block never
    closed is all thinking; one the template opened has no opening tag in the text."""
    start = text.lstrip()
    opened = start.startswith(tags.open)
    if opened:
        start = start[len(tags.open) :]
    head, closed, tail = start.partition(tags.close)
    if closed:
        return head.strip(), tail.lstrip()
    if opened or tags.opened_by_template:
        return start.strip(), ""
    return None, text


def split_completion(completion: Completion, tags: ThinkingTags) -> Completion:
    """`completion` with its thinking told apart from its answer, where a reasoning parser did
    not already; thinking tokens estimated by the thinking's share of the text."""
    if completion.reasoning is None and completion.tool_calls == ():
        thinking, answer = split(completion.text, tags)
        if thinking is None:
            return completion
        completion = dataclasses.replace(completion, text=answer, reasoning=thinking)
    if completion.reasoning and not completion.reasoning_tokens:
        share = len(completion.reasoning) / max(1, len(completion.reasoning) + len(completion.text))
        counted = min(completion.tokens, round(completion.tokens * share))
        completion = dataclasses.replace(completion, reasoning_tokens=counted)
    return completion


@dataclass
class _Chain:
    """One candidate thinking under the controls, then answering."""

    ctx: StrategyContext
    prompt: Prompt
    sampling: SamplingParams
    thinking: Thinking
    tags: ThinkingTags
    thought: str = ""
    thinking_tokens: int = 0
    probes: list[str | None] = dataclasses.field(default_factory=list)
    probe_tokens: int = 0
    prompt_tokens: int = 0
    ended: str | None = None

    @property
    def budget(self) -> int:
        cap = self.thinking.max_tokens or self.sampling.max_tokens
        return min(cap, self.sampling.max_tokens)

    async def run(self) -> Completion:
        if self.budget == 0:
            # No thinking at all: the block is closed before the model writes a word of it.
            self.thought = "" if self.tags.opened_by_template else self.tags.open
            self.ended = "thinking budget (0 tokens)"
            return await self._answer(self.thought, forced=True)
        while True:
            step = self.budget - self.thinking_tokens
            if self.thinking.probe is not None:
                step = min(step, self.thinking.probe.interval)
            # The request's stop strings end the output in the thinking too, as vLLM's do.
            stops = (self.tags.close, *self.sampling.stop)
            piece = await self._call(self.thought, step, stops, include_stop=True)
            raw = (piece.reasoning or "") + piece.text
            hit = next((s for s in self.sampling.stop if raw.endswith(s)), None)
            if hit is not None and piece.finish_reason == "stop":
                kept = raw if self.sampling.include_stop else raw.removesuffix(hit)
                self.thought += kept
                self.thinking_tokens += piece.tokens
                return self._completion(Completion("", "stop", 0))
            # A reasoning parser that split the piece took the closing tag out of both parts:
            # it is put back, so that the answer is asked for after a closed block.
            parsed_closed = piece.reasoning is not None and piece.finish_reason == "stop"
            end = self.tags.close if parsed_closed else ""
            raw = (piece.reasoning or "") + end + piece.text
            first = not self.thought
            self.thought += raw
            self.thinking_tokens += piece.tokens
            closed = self.thought.rstrip().endswith(self.tags.close)
            if first and not closed and not (piece.reasoning or self._thinking_begun()):
                # No thinking block: the model answers at once, and goes on as it began.
                return await self._answer(self.thought, forced=False, thinking=False)
            if closed:
                short = self.thinking.min_tokens and self.thinking_tokens < self.thinking.min_tokens
                if short and self.thinking_tokens < self.budget:
                    self.thought = self.thought.removesuffix(self.tags.close) + WAIT
                    continue
                return await self._answer(self.thought, forced=False)
            if piece.finish_reason == "stop" or not piece.tokens:
                # The model ended inside its thinking: no answer to ask for.
                return self._completion(Completion("", "stop", 0))
            if self.thinking_tokens >= self.budget:
                self.ended = f"thinking budget ({self.budget} tokens)"
                return await self._answer(self.thought, forced=True)
            if self.thinking.probe is not None and await self._settled(self.thinking.probe):
                self.ended = f"{self.thinking.probe.agree} probes agreed"
                return await self._answer(self.thought, forced=True)

    def _thinking_begun(self) -> bool:
        return self.tags.opened_by_template or self._opens(self.thought)

    def _opens(self, text: str) -> bool:
        return text.lstrip().startswith(self.tags.open)

    async def _settled(self, probe: Probe) -> bool:
        prefix = self.thought + PROBE.format(close=self.tags.close)
        piece = await self._call(prefix, probe.max_tokens, ("}",), greedy=True)
        self.probe_tokens += piece.tokens
        # A reasoning parser that saw no closing tag in the output may call it all thinking.
        written = (piece.reasoning or "") + piece.text
        said = normalize(written.split("}")[0].strip()) or None
        self.probes.append(said)
        last = self.probes[-probe.agree :]
        return len(last) == probe.agree and last[0] is not None and len(set(last)) == 1

    async def _answer(self, thought: str, forced: bool, thinking: bool = True) -> Completion:
        left = self.sampling.max_tokens - self.thinking_tokens
        if left <= 0:
            # The thinking took every token the candidate had: cut off before it answered.
            self.ended = None
            return self._completion(Completion("", "length", 0))
        prefix = thought + FORCE_CLOSE.format(close=self.tags.close) if forced else thought
        stops = self.sampling.stop
        answer = await self._call(
            prefix, left, stops, logprobs=self.sampling.logprobs, in_thinking=thinking
        )
        if thinking:
            # After a closed block the output is the answer, whatever a parser called it.
            answer = dataclasses.replace(answer, text=(answer.reasoning or "") + answer.text)
        else:
            whole = Completion(
                thought + answer.text,
                answer.finish_reason,
                self.thinking_tokens + answer.tokens,
                answer.logprobs,
            )
            return split_completion(whole, self.tags)
        return self._completion(answer)

    def _completion(self, answer: Completion) -> Completion:
        thought, _ = split(self.thought, self.tags)
        return Completion(
            text=answer.text.lstrip(),
            finish_reason=answer.finish_reason,
            tokens=self.thinking_tokens + answer.tokens,
            logprobs=answer.logprobs,
            reasoning=thought if thought is not None else self.thought.strip(),
            tool_calls=answer.tool_calls,
            reasoning_tokens=self.thinking_tokens,
        )

    async def _call(
        self,
        prefix: str,
        max_tokens: int,
        stop: tuple[str, ...],
        include_stop: bool = False,
        greedy: bool = False,
        logprobs: int | None = None,
        in_thinking: bool = True,
    ) -> Completion:
        params = dataclasses.replace(
            self.sampling,
            n=1,
            max_tokens=max(1, max_tokens),
            stop=stop,
            include_stop=include_stop,
            logprobs=logprobs,
            temperature=0.0 if greedy else self.sampling.temperature,
            # Thinking is free text; the answer alone is held to the request's output form.
            structured=None,
        )
        chat = isinstance(self.prompt, ChatPrompt)
        if chat and in_thinking and prefix and not self._opens(prefix):
            # A continued turn is rendered without the generation prompt that opened the
            # block: the prefix opens it itself, as templates do (`<think>` and a newline).
            opening = self.tags.open + "\n" if self.tags.opened_by_template else self.tags.open
            prefix = opening + prefix
        generation = await self.ctx.generate(continuation(self.prompt, prefix), params)
        if not self.prompt_tokens:
            self.prompt_tokens = generation.prompt_tokens
        return generation.completions[0]


def thinking_stopped(ended: Sequence[str | None]) -> str | None:
    """Why candidates' thinking stopped early (`ended`, None for one that ended on its own), as
    `reasoning_stopped_early` says it; None when none did."""
    said = [f"candidate {i}: {why}" for i, why in enumerate(ended) if why]
    return f"thinking ended early ({'; '.join(said)})" if said else None


@dataclass(frozen=True)
class ThoughtChains:
    """What the chains of one call did, for the trace: per candidate, why its thinking ended
    early (None: it ended on its own), its probes' answers and the tokens they took."""

    ended: tuple[str | None, ...]
    probes: tuple[tuple[str | None, ...], ...]
    probe_tokens: int

    def stopped(self) -> str | None:
        """Why thinking stopped early, per candidate that did, as `reasoning_stopped_early`."""
        return thinking_stopped(self.ended)

    def trace(self) -> dict[str, Any]:
        """The chains as the response's trace shows them."""
        return {
            "thinking": [
                {"ended_by": ended, "probes": list(probes)}
                for ended, probes in zip(self.ended, self.probes, strict=True)
            ],
            "probe_tokens": self.probe_tokens,
        }


async def generate_thinking(
    ctx: StrategyContext,
    prompt: Prompt,
    sampling: SamplingParams,
    thinking: Thinking | None,
    tags: ThinkingTags,
) -> tuple[Generation, ThoughtChains | None]:
    """`sampling.n` candidates of `prompt`, their thinking told apart from their answers: in
    one call when no control applies (or only a budget, which a model server that enforces
    `thinking_token_budget` applies), else one chain of calls each (seeds moved on by the
    candidate's place, as waves do)."""
    tags = tags_for(prompt, tags)
    native = thinking is not None and thinking.is_budget_only and tags.native_budget
    if thinking is None or native:
        if native:
            # vLLM closes the block at the budget and the model answers, as a chain would.
            assert thinking is not None and thinking.max_tokens is not None
            budget = min(thinking.max_tokens, sampling.max_tokens)
            forwarded = {**sampling.forwarded, "thinking_token_budget": budget}
            sampling = dataclasses.replace(sampling, forwarded=forwarded)
        generation = await ctx.generate(prompt, sampling)
        completions = tuple(split_completion(c, tags) for c in generation.completions)
        ctx.usage.thinking_tokens += sum(c.reasoning_tokens for c in completions)
        return dataclasses.replace(generation, completions=completions), None
    chains = [
        _Chain(
            ctx,
            prompt,
            dataclasses.replace(
                sampling, n=1, seed=None if sampling.seed is None else sampling.seed + i
            ),
            thinking,
            tags,
        )
        for i in range(sampling.n)
    ]
    async with asyncio.TaskGroup() as group:
        runs = [group.create_task(chain.run()) for chain in chains]
    completions = tuple(run.result() for run in runs)
    ctx.usage.thinking_tokens += sum(c.reasoning_tokens for c in completions)
    ctx.usage.probe_tokens += sum(chain.probe_tokens for chain in chains)
    generation = Generation(completions, prompt_tokens=chains[0].prompt_tokens)
    report = ThoughtChains(
        ended=tuple(c.ended for c in chains),
        probes=tuple(tuple(c.probes) for c in chains),
        probe_tokens=sum(c.probe_tokens for c in chains),
    )
    return generation, report


class StreamSplit:
    """Tells a streamed completion's thinking from its answer as its text arrives: `feed`
    returns the new thinking and the new answer, holding back what may be the start of a tag."""

    def __init__(self, tags: ThinkingTags) -> None:
        self.tags = tags
        self.state = "thinking" if tags.opened_by_template else "start"
        self.pending = ""

    def feed(self, text: str) -> tuple[str, str]:
        """The thinking and the answer text that `text` completes."""
        self.pending += text
        thinking = ""
        if self.state == "start":
            begun = self.pending.lstrip()
            if begun.startswith(self.tags.open):
                self.pending, self.state = begun[len(self.tags.open) :], "thinking"
            elif begun and not self.tags.open.startswith(begun):
                self.state = "answer"
            else:
                return "", ""
        if self.state == "thinking":
            head, closed, tail = self.pending.partition(self.tags.close)
            if not closed:
                # The end of the text may be the start of the closing tag: held back.
                cut = max(0, len(head) - (len(self.tags.close) - 1))
                thinking, self.pending = head[:cut], head[cut:]
                return thinking, ""
            thinking, self.pending, self.state = head, tail.lstrip(), "answer"
        answer, self.pending = self.pending, ""
        return thinking, answer

    def flush(self) -> tuple[str, str]:
        """What is held back when the stream ends."""
        held, self.pending = self.pending, ""
        return (held, "") if self.state == "thinking" else ("", held)
