"""`cot`: zero-shot chain-of-thought prompting.

After Kojima et al., "Large Language Models are Zero-Shot Reasoners" (2022), and Wei et al.,
"Chain-of-Thought Prompting Elicits Reasoning in Large Language Models" (2022):

1. Ask for step-by-step reasoning that ends in a marked answer line. Chat requests get the
   instruction in their system message; raw prompts get it appended.
2. Sample the request's `n` completions (streamed token by token when the client streams).
3. Split each completion at the first answer marker (case-insensitive): the text before it is
   the reasoning (`message.reasoning`), the text after it the answer (`message.content`).
   Small models often state the answer without the marker: then the last non-empty line is
   the answer and the lines before it the reasoning; a completion of one line answers with its
   last sentence, the sentences before it being the reasoning.

With `tools`, the backend's calls (parsed by vLLM's tool parser, or the embedded backend's)
pass through as the answer, after whatever reasoning the model wrote before them.

With `response_format` (JSON), the whole completion is the answer: the grammar lets the model
write nothing but the JSON, so there is no reasoning text to split off (and an answer marker
inside a JSON string must not cut it). The instruction then asks for the reasoning inside the
JSON, before the fields that hold the result: a schema that wants visible reasoning gives it a
field of its own, first, as structured-output guides advise.
"""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar

from pydantic import Field

from backends.base import ChatMessage, Prompt, StreamDelta, TextPrompt
from strategies.base import Choice, ChoiceDelta, StrategyParams, StrategyRequest, StrategyResult
from strategies.budget import capped_by_budget
from strategies.context import StrategyContext

__all__ = [
    "DEFAULT_INSTRUCTION",
    "JSON_INSTRUCTION",
    "AnswerSplitter",
    "ChainOfThought",
    "CoTParams",
    "with_instruction",
]

DEFAULT_INSTRUCTION = (
    "Think step by step. Write out your reasoning, then give the final answer on its own "
    "line, starting with 'Answer:'."
)


# The default instruction when the answer must be JSON (see the module docstring).
JSON_INSTRUCTION = (
    "Think step by step. Work the problem out in the JSON you write, in the fields before the "
    "ones that hold the final answer."
)


class CoTParams(StrategyParams):
    """Params of `cot`."""

    instruction: str = Field(
        default=DEFAULT_INSTRUCTION, min_length=1, description="The step-by-step instruction."
    )
    answer_marker: str = Field(
        default="Answer:", min_length=1, description="Text that introduces the final answer."
    )


class AnswerSplitter:
    """Splits a completion, fed piece by piece, into reasoning and answer text.

    Fed the same text in one piece or in many, it produces the same concatenated output, so a
    streamed answer equals the one a non-streaming client gets.
    """

    def __init__(self, marker: str) -> None:
        # Matched on the original text: lower-casing can change a string's length ("İ").
        self._pattern = re.compile(re.escape(marker), re.IGNORECASE)
        self._pending = ""
        self._has_marker = False
        self._answer_started = False
        self.reasoning = ""
        self.answer = ""

    def feed(self, text: str) -> tuple[str, str]:
        """Take new text; returns the (reasoning, answer) text that is now final."""
        if self._has_marker:
            return "", self._add_answer(text)
        self._pending += text
        found = self._pattern.search(self._pending)
        if found is not None:
            before, after = self._pending[: found.start()], self._pending[found.end() :]
            self._pending = ""
            self._has_marker = True
            self.reasoning += before
            return before, self._add_answer(after)
        # Hold back the last line with text: without a marker it may be the answer (and a
        # marker could still begin in it).
        cut = self._pending.rstrip().rfind("\n") + 1
        released, self._pending = self._pending[:cut], self._pending[cut:]
        self.reasoning += released
        return released, ""

    def finish(self) -> tuple[str, str]:
        """End of text: without a marker, the held-back last line is the answer, or, if it is
        the only line, its last sentence."""
        if self._has_marker:
            return "", ""
        last, self._pending = self._pending, ""
        line = last.strip()
        reasoning = ""
        if line and not self.reasoning.strip():
            sentences = _SENTENCE_END.split(line)
            if len(sentences) > 1:
                line = sentences[-1]
                reasoning = last[: last.rindex(line)]
        self.reasoning += reasoning
        self.answer = line
        return reasoning, line

    def _add_answer(self, text: str) -> str:
        if not self._answer_started:
            text = text.lstrip()
            self._answer_started = bool(text)
        self.answer += text
        return text


# Where one sentence ends and the next begins.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def with_instruction(prompt: Prompt, instruction: str) -> Prompt:
    """The prompt with the step-by-step instruction added where the model will heed it."""
    if isinstance(prompt, TextPrompt):
        return TextPrompt(f"{prompt.text}\n{instruction}\n")
    messages = prompt.messages
    if messages and messages[0].role == "system":
        system = ChatMessage("system", f"{messages[0].content}\n\n{instruction}")
        return dataclasses.replace(prompt, messages=(system, *messages[1:]))
    return dataclasses.replace(prompt, messages=(ChatMessage("system", instruction), *messages))


class ChainOfThought:
    """Step-by-step prompting with the reasoning and the answer returned apart."""

    name: ClassVar[str] = "cot"
    takes_tools: ClassVar[bool] = True
    takes_json: ClassVar[bool] = True
    takes_thinking: ClassVar[bool] = False
    params_model: ClassVar[type[StrategyParams]] = CoTParams

    async def run(
        self, request: StrategyRequest, params: CoTParams, ctx: StrategyContext
    ) -> StrategyResult:
        if request.sampling.structured is not None:
            return await self._run_json(request, params, ctx)
        prompt = with_instruction(request.prompt, params.instruction)
        splitters = [AnswerSplitter(params.answer_marker) for _ in range(request.sampling.n)]

        async def split(delta: StreamDelta) -> None:
            reasoning, answer = splitters[delta.index].feed(delta.text)
            await ctx.emit(
                ChoiceDelta(delta.index, answer, reasoning, delta.logprobs, delta.tool_calls)
            )

        sampling = ctx.budget.capped(request.sampling)
        async with ctx.budget.timed(self.name):
            if ctx.is_streaming:
                generation = await ctx.generate_streamed(prompt, sampling, split)
            else:
                generation = await ctx.generate(prompt, sampling)
        if not ctx.is_streaming:
            for splitter, completion in zip(splitters, generation.completions, strict=True):
                splitter.feed(completion.text)

        choices = []
        for index, (splitter, completion) in enumerate(
            zip(splitters, generation.completions, strict=True)
        ):
            reasoning, answer = splitter.finish()
            if reasoning or answer:
                await ctx.emit(ChoiceDelta(index, answer, reasoning))
            answer_tokens = await ctx.count_tokens(splitter.answer) if splitter.answer else 0
            if completion.tool_calls:
                # The calls are the answer: every token but the reasoning's is in them.
                reasoning_tokens = await ctx.count_tokens(splitter.reasoning)
                answer_tokens = completion.tokens - reasoning_tokens
            choices.append(
                Choice(
                    content=splitter.answer,
                    finish_reason=completion.finish_reason,
                    content_tokens=min(answer_tokens, completion.tokens),
                    reasoning=splitter.reasoning or None,
                    logprobs=completion.logprobs,
                    tool_calls=completion.tool_calls,
                )
            )
        return StrategyResult(
            tuple(choices), ctx.usage, stopped_early=capped_by_budget(request, sampling)
        )

    async def _run_json(
        self, request: StrategyRequest, params: CoTParams, ctx: StrategyContext
    ) -> StrategyResult:
        """The JSON answer whole: instructed to reason inside it, returned unsplit."""
        instruction = (
            JSON_INSTRUCTION if params.instruction == DEFAULT_INSTRUCTION else params.instruction
        )
        prompt = with_instruction(request.prompt, instruction)
        sampling = ctx.budget.capped(request.sampling)
        if ctx.is_streaming:

            async def forward(delta: StreamDelta) -> None:
                await ctx.emit(ChoiceDelta(delta.index, delta.text, "", delta.logprobs))

            generation = await ctx.generate_streamed(prompt, sampling, forward)
        else:
            generation = await ctx.generate(prompt, sampling)
        choices = tuple(
            Choice(c.text, c.finish_reason, content_tokens=c.tokens, logprobs=c.logprobs)
            for c in generation.completions
        )
        return StrategyResult(choices, ctx.usage, stopped_early=capped_by_budget(request, sampling))
