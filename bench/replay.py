"""Replaying stored samples through the served rules, in process, for `bench/accuracy.py`.

vLLM seeds the i-th of the `n` samples of a request seeded `s` with `s + i`, and the sampling
strategies seed each wave at its offset (`strategies.candidates.sample`), so sample `k` of a
problem is the same whichever wave layout draws it. `ReplayBackend` answers a strategy's
`generate` calls with the stored samples at those positions; the strategies replayed are the
registered ones with their real params, so every stopping rule and the `auto` policy decide here
exactly as they decide when served. This is the one benchmark module that imports the project's
layers (never `server`): replaying the served rules is its point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backends.base import ChatMessage, ChatPrompt, Completion, Generation, Prompt, SamplingParams
from backends.scripted import ScriptedBackend
from strategies.auto import POLICY
from strategies.base import ParamsContext, StrategyRequest
from strategies.context import StrategyContext
from strategies.limits import Limits
from strategies.registry import get_strategy, parse_params

__all__ = ["Outcome", "ReplayBackend", "Stored", "default_policy", "replay"]

# The server's default ceiling on samples per request, which a policy of 16 stays within.
_CONTEXT = ParamsContext(limits=Limits(max_n=16))


def default_policy() -> list[dict[str, int | None]]:
    """`auto`'s default policy as `reasoning_params.policy` spells it."""
    return [stage.model_dump() for stage in POLICY]


@dataclass(frozen=True)
class Stored:
    """One stored sample: its text and how many tokens the model generated for it."""

    text: str
    tokens: int


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

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        start = (params.seed if params.seed is not None else self.first_seed) - self.first_seed
        if start < 0 or start + params.n > len(self.samples):
            raise ValueError(f"samples {start}..{start + params.n - 1} are not stored")
        self.waves.append((start, params.n))
        drawn = self.samples[start : start + params.n]
        return Generation(
            tuple(
                Completion(s.text, "length" if s.tokens >= self.max_tokens else "stop", s.tokens)
                for s in drawn
            ),
            prompt_tokens=0,
        )


async def replay(
    strategy: str,
    params: dict[str, Any],
    messages: Sequence[tuple[str, str]],
    samples: Sequence[Stored],
    seed: int,
    max_tokens: int,
    temperature: float,
) -> Outcome:
    """Run the registered `strategy` with `params` on one problem's stored samples."""
    chosen = get_strategy(strategy)
    parsed = parse_params(chosen, {**params, "return_trace": True}, _CONTEXT)
    prompt = ChatPrompt(tuple(ChatMessage(role, content) for role, content in messages))
    sampling = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
    backend = ReplayBackend(samples, seed, max_tokens)
    ctx = StrategyContext(backend=backend, request_id="replay")
    result = await chosen.run(StrategyRequest(prompt, sampling), parsed, ctx)
    return Outcome(
        content=result.choices[0].content,
        completion_tokens=result.usage.completion_tokens,
        verifier_tokens=result.usage.verifier_tokens,
        drawn=sum(n for _, n in backend.waves),
        stopped_early=result.stopped_early,
        trace=dict(result.trace or {}),
    )
