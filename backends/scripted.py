"""A backend that answers from a script: exact control of what candidates say, for tests.

With `tools` in a chat prompt, a scripted text is read for calls as the embedded model's is
(`backends.tool_calls`: Hermes `<tool_call>` blocks, bare JSON for a forced choice), so a
script can answer with calls.

It tokenizes by whitespace-led words (`"a b"` is two tokens, `"a"` and `" b"`), so its token
counts are exact by its own definition, and records every call so tests can assert how many
requests a strategy made and with what parameters.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from backends.errors import BackendError
from backends.prompts import ChatPrompt, Prompt, SamplingParams, TextPrompt, TokenPrompt, ToolCall
from backends.results import (
    Completion,
    Echo,
    FinishReason,
    Generation,
    PromptLogprobs,
    PromptToken,
    StreamDelta,
    StreamEnd,
    StreamEvent,
    Tokenized,
    TokenLogprob,
    ToolCallDelta,
)
from backends.stops import truncate_at_stop
from backends.tool_calls import parse_calls

__all__ = ["Call", "Script", "ScriptedBackend", "tokenize"]

Script = Callable[[Prompt, SamplingParams], Iterable[str]]

_TOKEN = re.compile(r"\s*\S+|\s+")


def tokenize(text: str) -> list[str]:
    """The scripted backend's tokens: whitespace-led words."""
    return _TOKEN.findall(text)


@dataclass(frozen=True)
class Call:
    """One recorded call: which method, the prompt and the sampling parameters."""

    method: str
    prompt: Prompt
    params: SamplingParams | None


class ScriptedBackend:
    """Answers `generate` and `stream` with scripted texts, in order, cycling when exhausted."""

    def __init__(
        self,
        texts: Iterable[str] | Script = ("scripted answer",),
        *,
        model: str = "scripted-model",
        delay_s: float = 0.0,
        error: BackendError | None = None,
        logprob: float = -0.5,
        token_logprob: Callable[[str, int], TokenLogprob] | None = None,
    ) -> None:
        if callable(texts):
            self._script: Script = texts
        else:
            pool = itertools.cycle(list(texts))
            self._script = lambda prompt, params: (next(pool) for _ in range(params.n))
        self._model = model
        self.delay_s = delay_s
        self.error = error
        self.logprob = logprob
        # How a token's log-probability looks, alternatives included (k of them asked).
        self.token_logprob = token_logprob
        self.calls: list[Call] = []
        self.generated_tokens = 0
        # Token ids are the order in which words were first seen.
        self._vocab: dict[str, int] = {}

    @property
    def sampled(self) -> list[SamplingParams]:
        """The sampling parameters of every generation call, in order."""
        return [call.params for call in self.calls if call.params is not None]

    async def model_name(self) -> str:
        return self._model

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        self.calls.append(Call("generate", prompt, params))
        await self._wait()
        return Generation(self._completions(prompt, params), self._prompt_tokens(prompt))

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamEvent]:
        self.calls.append(Call("stream", prompt, params))
        await self._wait()
        completions = self._completions(prompt, params)
        prompt_tokens = self._prompt_tokens(prompt)  # told with the first delta
        for index, completion in enumerate(completions):
            for token in tokenize(completion.text):
                await asyncio.sleep(self.delay_s)
                logprobs = self._token_logprobs([token], params)
                yield StreamDelta(index, token, logprobs, tokens=1, prompt_tokens=prompt_tokens)
                prompt_tokens = 0
            for k, call in enumerate(completion.tool_calls):
                # As vLLM streams a call: its id and name, then its arguments in two pieces.
                half = len(call.arguments) // 2
                yield StreamDelta(index, "", tool_calls=(ToolCallDelta(k, call.id, call.name),))
                for piece in (call.arguments[:half], call.arguments[half:]):
                    yield StreamDelta(index, "", tool_calls=(ToolCallDelta(k, arguments=piece),))
        yield StreamEnd.of(Generation(completions, self._prompt_tokens(prompt)))

    async def prompt_logprobs(self, prompt: Prompt, continuation: str) -> PromptLogprobs:
        self.calls.append(Call("prompt_logprobs", prompt, None))
        await self._wait()
        scored = tuple(TokenLogprob(t, self.logprob) for t in tokenize(continuation))
        return PromptLogprobs(scored, self._prompt_tokens(prompt) + len(scored))

    async def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, TextPrompt):
            return prompt.text
        turns = "".join(f"<{m.role}>{m.content}</{m.role}>" for m in prompt.messages)
        return turns if prompt.continue_final_message else turns + "<assistant>"

    async def count_tokens(self, text: str) -> int:
        return len(tokenize(text))

    async def echo(self, prompt: TextPrompt | TokenPrompt, params: SamplingParams) -> Echo:
        text = prompt.text if isinstance(prompt, TextPrompt) else await self.detokenize(prompt.ids)
        self.calls.append(Call("echo", TextPrompt(text), params))
        await self._wait()
        tokens, offset = [], 0
        for i, token in enumerate(tokenize(text)):
            top = ((token, self.logprob),) if params.logprobs else ()
            tokens.append(PromptToken(token, self.logprob if i else None, top, offset))
            offset += len(token)
        completions = self._completions(TextPrompt(text), params) if params.max_tokens else ()
        if not completions:
            completions = (Completion.empty(params.logprobs is not None),) * params.n
        return Echo(text, tuple(tokens), Generation(completions, len(tokens)))

    async def tokenize(
        self, prompt: TextPrompt | ChatPrompt, add_special_tokens: bool, with_strings: bool
    ) -> Tokenized:
        words = tokenize(await self.render(prompt))
        ids = tuple(self._vocab.setdefault(word, len(self._vocab)) for word in words)
        return Tokenized(ids, 2048, tuple(words) if with_strings else None)

    async def detokenize(self, ids: Sequence[int]) -> str:
        words = {i: word for word, i in self._vocab.items()}
        return "".join(words.get(i, "") for i in ids)

    async def tokenizer_info(self) -> dict[str, Any]:
        return {"tokenizer_class": "ScriptedTokenizer", "eos_token": "</s>"}

    def session(
        self, request_id: str | None = None, deadline: float | None = None
    ) -> ScriptedBackend:
        return self

    async def check_ready(self) -> None:
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        return None

    async def _wait(self) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error

    def _completions(self, prompt: Prompt, params: SamplingParams) -> tuple[Completion, ...]:
        texts = list(itertools.islice(self._script(prompt, params), params.n))
        completions = tuple(self._completion(text, params, prompt) for text in texts)
        self.generated_tokens += sum(c.tokens for c in completions)
        return completions

    def _completion(self, text: str, params: SamplingParams, prompt: Prompt) -> Completion:
        text, _ = truncate_at_stop(text, params.stop, params.include_stop)
        tokens = tokenize(text)
        finish: FinishReason = "stop"
        if len(tokens) > params.max_tokens:
            tokens = tokens[: params.max_tokens]
            text = "".join(tokens)
            finish = "length"
        calls: tuple[ToolCall, ...] = ()
        if isinstance(prompt, ChatPrompt) and prompt.tools is not None:
            parsed = parse_calls(text, prompt.tools, finish)
            text, calls, finish = parsed.text, parsed.calls, parsed.finish_reason
        return Completion(
            text=text,
            finish_reason=finish,
            tokens=len(tokens),
            logprobs=self._token_logprobs(tokens, params),
            tool_calls=calls,
        )

    def _token_logprobs(
        self, tokens: list[str], params: SamplingParams
    ) -> tuple[TokenLogprob, ...] | None:
        if params.logprobs is None:
            return None
        if self.token_logprob is not None:
            return tuple(self.token_logprob(t, params.logprobs) for t in tokens)
        return tuple(TokenLogprob(t, self.logprob) for t in tokens)

    def _prompt_tokens(self, prompt: Prompt) -> int:
        if isinstance(prompt, ChatPrompt):
            return sum(len(tokenize(m.content)) + 2 for m in prompt.messages)
        return len(tokenize(prompt.text))
