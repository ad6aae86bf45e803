"""Replaying stored samples through the served rules, in process, for `bench/accuracy.py`.

vLLM seeds the i-th of the `n` samples of a request seeded `s` with `s + i`, and the sampling
strategies seed each wave at its offset (`strategies.sampling.sample`), so sample `k` of a
problem is the same whichever wave layout draws it. `ReplayBackend` answers a strategy's
`generate` calls with the stored samples at those positions; the strategies replayed are the
registered ones with their real params, so every stopping rule and the `auto` policy decide here
exactly as they decide when served. This is the one benchmark module that imports the project's
layers (never `server`): replaying the served rules is its point.

DeepConf streams its traces with their log-probabilities. A stored sample keeps each token's
DeepConf confidence (`token_confidence` of its top alternatives, as vLLM sent them), and the
replay sends it back as a token whose own log-probability is minus that confidence, with no
alternatives, which `token_confidence` reads as the same number; a stream's text comes with its
last token (a trace cut before then does not vote, so its text is never read).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from backends.base import (
    ChatMessage,
    ChatPrompt,
    Completion,
    FinishReason,
    Generation,
    Prompt,
    SamplingParams,
    StreamDelta,
    StreamEnd,
    StreamEvent,
    TokenLogprob,
)
from backends.scripted import ScriptedBackend
from strategies.auto import POLICY
from strategies.base import ParamsContext, StrategyRequest
from strategies.context import StrategyContext
from strategies.limits import Limits
from strategies.registry import get_strategy, parse_params
from verifiers.confidence import token_confidence
from verifiers.equivalence import EquivalencePool

__all__ = [
    "Equivalence",
    "Outcome",
    "ReplayBackend",
    "Stored",
    "comparing_answers",
    "confidences",
    "default_policy",
    "replay",
]

# The server's default ceiling on samples per request, which a policy of 16 stays within.
_CONTEXT = ParamsContext(limits=Limits(max_n=16))


def default_policy() -> list[dict[str, int | None]]:
    """`auto`'s default policy as `reasoning_params.policy` spells it."""
    return [stage.model_dump() for stage in POLICY]


@dataclass(frozen=True)
class Stored:
    """One stored sample: its text, how many tokens the model generated for it, and each
    token's DeepConf confidence (empty for samples stored without log-probabilities)."""

    text: str
    tokens: int
    confidences: tuple[float, ...] = field(default=())

    def logprobs(self) -> tuple[TokenLogprob, ...]:
        """Tokens that `token_confidence` reads as the stored confidences."""
        if len(self.confidences) != self.tokens:
            raise ValueError("this sample was stored without a confidence per token")
        return tuple(TokenLogprob("", -c) for c in self.confidences)


def confidences(tokens: Iterable[dict[str, Any]]) -> list[float]:
    """Each token's DeepConf confidence, from an OpenAI `logprobs.content` list."""
    return [
        round(
            token_confidence(
                TokenLogprob(
                    t["token"],
                    t["logprob"],
                    tuple((a["token"], a["logprob"]) for a in t.get("top_logprobs") or ()),
                )
            ),
            4,
        )
        for t in tokens
    ]


@dataclass(frozen=True)
class Outcome:
    """What a replayed strategy answered and spent."""

    content: str
    completion_tokens: int
    verifier_tokens: int
    drawn: int
    stopped_early: str | None
    trace: dict[str, Any]


class ReplayBackend(ScriptedBackend):
    """Answers `generate` with stored samples: those at `seed - first_seed` onwards (the rest
    of the backend is the scripted one's, which the sampling strategies never call)."""

    def __init__(self, samples: Sequence[Stored], first_seed: int, max_tokens: int) -> None:
        super().__init__()
        self.samples = list(samples)
        self.first_seed = first_seed
        self.max_tokens = max_tokens
        self.waves: list[tuple[int, int]] = []

    def _drawn(self, params: SamplingParams) -> list[Stored]:
        start = (params.seed if params.seed is not None else self.first_seed) - self.first_seed
        if start < 0 or start + params.n > len(self.samples):
            raise ValueError(f"samples {start}..{start + params.n - 1} are not stored")
        self.waves.append((start, params.n))
        return self.samples[start : start + params.n]

    def _finish(self, sample: Stored) -> FinishReason:
        return "length" if sample.tokens >= self.max_tokens else "stop"

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        return Generation(
            tuple(
                Completion(
                    s.text,
                    self._finish(s),
                    s.tokens,
                    s.logprobs() if params.logprobs is not None else None,
                )
                for s in self._drawn(params)
            ),
            prompt_tokens=0,
        )

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamEvent]:
        drawn = self._drawn(params)
        for index, sample in enumerate(drawn):
            tokens = sample.logprobs()
            for i, token in enumerate(tokens):
                text = sample.text if i == len(tokens) - 1 else ""
                yield StreamDelta(index, text, (token,) if params.logprobs is not None else None)
            if not tokens:
                yield StreamDelta(index, sample.text, ())
        yield StreamEnd(tuple(self._finish(s) for s in drawn), 0, tuple(s.tokens for s in drawn))


async def replay(
    strategy: str,
    params: dict[str, Any],
    messages: Sequence[tuple[str, str]],
    samples: Sequence[Stored],
    seed: int,
    max_tokens: int,
    temperature: float,
    equivalence: EquivalencePool | None = None,
) -> Outcome:
    """Run the registered `strategy` with `params` on one problem's stored samples, comparing
    answers with math-verify in `equivalence`'s workers as the server does."""
    chosen = get_strategy(strategy)
    parsed = parse_params(chosen, {**params, "return_trace": True}, _CONTEXT)
    prompt = ChatPrompt(tuple(ChatMessage(role, content) for role, content in messages))
    sampling = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
    backend = ReplayBackend(samples, seed, max_tokens)
    ctx = StrategyContext(backend=backend, request_id="replay", equivalence=equivalence)
    result = await chosen.run(StrategyRequest(prompt, sampling), parsed, ctx)
    return Outcome(
        content=result.choices[0].content,
        completion_tokens=result.usage.completion_tokens,
        verifier_tokens=result.usage.verifier_tokens,
        drawn=sum(n for _, n in backend.waves),
        stopped_early=result.stopped_early,
        trace=dict(result.trace or {}),
    )


# What a replay compares answers with, for callers that may not import the layers.
Equivalence = EquivalencePool


@contextlib.asynccontextmanager
async def comparing_answers() -> AsyncIterator[EquivalencePool]:
    """math-verify's workers for a run of replays, stopped when it ends."""
    equivalence = EquivalencePool()
    try:
        yield equivalence
    finally:
        await equivalence.aclose()
