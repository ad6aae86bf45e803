"""particle_filtering in a synthetic environment of scripted steps and PRM scores.

The i-th child of any prefix at depth d is `s{d}{letter}`: followed by the step separator, or,
for the steps in `ANSWERS`, by an answer that ends the solution (as every step at depth 2 does).
The PRM scores a path by its last step, from `SCORES`.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from backends.base import ChatPrompt, Prompt, SamplingParams
from backends.scripted import ScriptedBackend
from strategies.base import InvalidParamsError, ParamsContext, StrategyResult
from strategies.context import StrategyContext
from strategies.particle_filtering import resample, softmax
from strategies.registry import get_strategy, parse_params
from tests.factories import chat_request
from verifiers.base import Candidate, CandidateScore, Scores

SEP = "\n\n"
CONTEXT = ParamsContext(verifiers=frozenset({"prm"}))
SCORES = {"s0a": 0.5, "s0b": 0.9, "s0c": 0.2, "s0d": 0.6}
SCORES |= {"s1a": 0.4, "s1b": 0.7, "s1c": 0.45, "s1d": 0.1}
SCORES |= {"s2a": 0.3, "s2b": 0.35, "s2c": 0.25, "s2d": 0.2}
ANSWERS = {"s1a": "5", "s1b": "7", "s1c": "5", "s1d": "3"}


def prefix_of(prompt: Prompt) -> str:
    assert isinstance(prompt, ChatPrompt)
    return prompt.messages[-1].content if prompt.continue_final_message else ""


def script(answers: Mapping[str, str]) -> Any:
    def children(prompt: Prompt, params: SamplingParams) -> list[str]:
        depth = prefix_of(prompt).count(SEP)
        names = [f"s{depth}{'abcd'[i % 4]}" for i in range(params.n)]
        return [step(name, depth) for name in names]

    def step(name: str, depth: int) -> str:
        if name in answers:
            return f"{name} answer {answers[name]}"
        return f"{name} answer 0" if depth >= 2 else name + SEP

    return children


class LastStepPRM:
    """Scores a path by its last step; records every call."""

    logprobs = None

    def __init__(self, scores: Mapping[str, float]) -> None:
        self.scores = scores
        self.calls: list[list[str]] = []

    async def score(self, question: str, candidates: Sequence[Candidate]) -> Scores:
        self.calls.append([c.text for c in candidates])
        scored = []
        for candidate in candidates:
            steps = tuple(self.scores[s.split(" ")[0]] for s in candidate.text.split(SEP) if s)
            scored.append(CandidateScore(steps[-1], steps))
        return Scores(tuple(scored), tokens=len(candidates))


async def run(
    params: dict[str, Any],
    *,
    seed: int | None = 7,
    scores: Mapping[str, float] = SCORES,
    answers: Mapping[str, str] = ANSWERS,
) -> tuple[StrategyResult, ScriptedBackend, LastStepPRM]:
    backend = ScriptedBackend(script(answers))
    prm = LastStepPRM(scores)
    strategy = get_strategy("particle_filtering")
    parsed = parse_params(
        strategy, {"verifier": "prm", "return_trace": True, "n": 4, **params}, CONTEXT
    )
    ctx = StrategyContext(backend=backend, request_id="r", verifiers={"prm": prm})
    request = chat_request(max_tokens=64, seed=seed)
    return await strategy.run(request, parsed, ctx), backend, prm


def tree_tokens(tree: dict[str, Any]) -> int:
    tokens: int = tree["tokens"]
    return tokens + sum(tree_tokens(child) for child in tree["children"])


def test_softmax_divides_scores_by_the_temperature() -> None:
    scores = [0.5, 0.9, 0.2]
    for t in (1.0, 0.5, 0.1):
        total = sum(math.exp(s / t) for s in scores)
        assert softmax(scores, t) == pytest.approx([math.exp(s / t) / total for s in scores])
    # A low temperature puts (almost) all the mass on the best score; a high one spreads it.
    assert softmax(scores, 0.01)[1] > 1 - 1e-15
    assert max(softmax(scores, 100.0)) < 0.34
    # Shifted, so that very low temperatures do not overflow.
    assert softmax([1000.0, 0.0], 0.001) == [1.0, 0.0]


def test_resampling_is_multinomial_and_seeded() -> None:
    probabilities = [0.1, 0.2, 0.7]
    draws = resample(random.Random(0), probabilities, 10_000)
    assert draws == sorted(draws)
    counts = Counter(draws)
    for i, p in enumerate(probabilities):
        assert counts[i] / 10_000 == pytest.approx(p, abs=0.02)
    # The same seed draws the same particles; another seed, others.
    assert resample(random.Random(3), probabilities, 8) == resample(
        random.Random(3), probabilities, 8
    )
    assert resample(random.Random(3), [0.5, 0.5], 16) != resample(random.Random(4), [0.5, 0.5], 16)


async def test_particles_are_resampled_by_their_scores() -> None:
    result, backend, prm = await run({"resampling_temperature": 0.5})
    assert result.trace is not None
    first, second = result.trace["resampling"]
    # Step 1: the four first steps, weighed by softmax(score / 0.5).
    assert first["scores"] == [0.5, 0.9, 0.2, 0.6]
    assert first["probabilities"] == pytest.approx(softmax([0.5, 0.9, 0.2, 0.6], 0.5))
    assert first["finished"] == []
    # The draws are the seeded multinomial draws of those probabilities.
    assert first["drawn"] == resample(random.Random(7), first["probabilities"], 4)
    # Step 2 ends every particle (the s1 steps carry answers): nothing left to resample.
    assert second["finished"] == [0, 1, 2, 3]
    assert "drawn" not in second
    assert result.stopped_early is None


async def test_one_request_per_distinct_prefix_and_one_verifier_call_per_step() -> None:
    result, backend, prm = await run({"resampling_temperature": 0.5})
    assert result.trace is not None
    first = result.trace["resampling"][0]
    names = ["s0a", "s0b", "s0c", "s0d"]
    # All particles start at the prompt: one request with n = N.
    assert backend.sampled[0].n == 4
    assert prefix_of(backend.calls[0].prompt) == ""
    # Then one request per distinct drawn particle, with n = its copies, in particle order.
    copies = Counter(first["drawn"])
    assert [(prefix_of(c.prompt), c.params.n if c.params else 0) for c in backend.calls[1:]] == [
        (names[i] + SEP, copies[i]) for i in sorted(copies)
    ]
    # One verifier call per step, with every particle advanced in it.
    assert [len(call) for call in prm.calls] == [4, 4]
    # Copies of one particle share its node: it has one child per copy.
    tree = result.trace["tree"]
    assert [len(child["children"]) for child in tree["children"]] == [copies[i] for i in range(4)]
    assert result.usage.completion_tokens == result.trace["tokens"] == tree_tokens(tree)


async def test_a_low_temperature_follows_the_best_particle() -> None:
    result, backend, prm = await run({"resampling_temperature": 0.01})
    assert result.trace is not None
    # s0b's 0.9 takes all the mass: every slot is a copy of it, advanced by one request.
    assert result.trace["resampling"][0]["drawn"] == [1, 1, 1, 1]
    assert [c.params.n if c.params else 0 for c in backend.calls] == [4, 4]
    assert prefix_of(backend.calls[1].prompt) == "s0b" + SEP
    # Its best finished child wins.
    assert result.choices[0].content == "s0b\n\ns1b answer 7"
    assert result.choices[0].finish_reason == "stop"


async def test_seeded_runs_repeat_and_other_seeds_differ() -> None:
    params = {"resampling_temperature": 1.0, "num_iterations": 3}
    traces = []
    for seed in (11, 11, 12):
        result, _, _ = await run(params, seed=seed, answers={})
        assert result.trace is not None
        traces.append([step.get("drawn") for step in result.trace["resampling"]])
    assert traces[0] == traces[1]
    assert traces[0] != traces[2]


async def test_finished_particles_are_kept_and_no_longer_advanced() -> None:
    # s0c ends at once with the best score of all; the others go on.
    scores = {**SCORES, "s0c": 0.95}
    result, backend, prm = await run(
        {"resampling_temperature": 0.5}, scores=scores, answers={**ANSWERS, "s0c": "9"}
    )
    assert result.trace is not None
    first, second = result.trace["resampling"]
    assert first["finished"] == [2]
    # Three slots are left, drawn from the three unfinished particles only.
    assert len(first["drawn"]) == 3 and 2 not in first["drawn"]
    assert first["probabilities"][2] is None
    assert first["probabilities"][:2] + first["probabilities"][3:] == pytest.approx(
        softmax([0.5, 0.9, 0.6], 0.5)
    )
    # Step 2 advances those three; s0c never gets a child.
    assert sum(c.params.n for c in backend.calls[1:] if c.params) == 3
    assert all(prefix_of(c.prompt) != "s0c" + SEP for c in backend.calls)
    assert [len(call) for call in prm.calls] == [4, 3]
    assert result.trace["tree"]["children"][2]["children"] == []
    # The answer is the best finished particle, although it was set aside at step 1.
    assert result.choices[0].content == "s0c answer 9"


async def test_weighted_vote_over_finished_particles() -> None:
    # At a low temperature all four particles continue s0b, and finish with
    # s1a "5" (0.4), s1b "7" (0.7), s1c "5" (0.45), s1d "3" (0.1).
    best, _, _ = await run({"resampling_temperature": 0.01})
    voted, _, _ = await run({"resampling_temperature": 0.01, "selection": "weighted_vote"})
    assert best.choices[0].content.endswith("s1b answer 7")
    # "5" weighs 0.85 against 0.7: its best-scored member answers.
    assert voted.choices[0].content.endswith("s1c answer 5")
    assert voted.trace is not None
    assert voted.trace["votes"] == pytest.approx({"5": 0.85, "7": 0.7, "3": 0.1})
    assert voted.trace["answer"] == voted.choices[0].content


async def test_token_budget_returns_the_best_partial_particle() -> None:
    # A budget of 3 over four particles caps each first step at one token (`s0x`, without its
    # separator): 4 tokens, one over, and the budget is spent.
    result, backend, prm = await run({"max_search_tokens": 3})
    assert result.stopped_early is not None and "token budget" in result.stopped_early
    assert result.usage.completion_tokens == 4
    assert result.choices[0].content == "s0b"
    assert result.choices[0].finish_reason == "length"
    assert len(backend.calls) == 1 and len(prm.calls) == 1


async def test_no_finished_particle_answers_with_the_best_unfinished_one() -> None:
    result, _, _ = await run({"num_iterations": 1})
    assert result.stopped_early == "no particle finished within 1 steps"
    assert result.choices[0].content == "s0b" + SEP


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"resampling_temperature": 0}, "reasoning_params.resampling_temperature"),
        ({"selection": "majority"}, "reasoning_params.selection"),
        ({"answer_format": "regex"}, "reasoning_params"),
    ],
)
def test_bad_params_name_their_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidParamsError) as info:
        parse_params(get_strategy("particle_filtering"), {"verifier": "prm", **params}, CONTEXT)
    assert info.value.param == field
