"""beam_search, dvts and mcts in a synthetic environment of scripted steps and PRM scores.

Every prefix has children named by depth and order: at depth d the i-th child of any prefix is
`s{d}{letter}` followed by the step separator; at depth 2 steps end the solution instead. The
PRM scores a path by a table of its steps, so the best path is known: s0b, s1c, s2a.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from backends.base import ChatPrompt, Prompt, SamplingParams
from backends.scripted import ScriptedBackend
from strategies.base import InvalidParamsError, ParamsContext, StrategyResult
from strategies.context import StrategyContext
from strategies.limits import Limits
from strategies.mcts import backpropagate, puct, select, set_priors
from strategies.registry import get_strategy, parse_params
from strategies.search import Node
from tests.factories import chat_request
from verifiers.base import Candidate, CandidateScore, Scores

SEP = "\n\n"
VALUES = {
    "s0a": 0.5,
    "s0b": 0.9,
    "s0c": 0.2,
    "s0d": 0.6,
    "s1a": 0.3,
    "s1b": 0.4,
    "s1c": 0.95,
    "s1d": 0.1,
    "s2a": 0.99,
    "s2b": 0.7,
    "s2c": 0.2,
    "s2d": 0.5,
}
CONTEXT = ParamsContext(verifiers=frozenset({"prm"}))


def prefix_of(prompt: Prompt) -> str:
    assert isinstance(prompt, ChatPrompt)
    if not prompt.continue_final_message:
        return ""
    assert prompt.messages[-1].role == "assistant"
    return prompt.messages[-1].content


def children(prompt: Prompt, params: SamplingParams) -> list[str]:
    depth = prefix_of(prompt).count(SEP)
    end = SEP if depth < 2 else " done"
    return [f"s{depth}{'abcd'[i % 4]}{end}" for i in range(params.n)]


class PathPRM:
    """Scores each step of a path from the table; the path's score is its last step's."""

    logprobs = None

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def score(self, question: str, candidates: Sequence[Candidate]) -> Scores:
        self.calls.append([c.text for c in candidates])
        scored = []
        for candidate in candidates:
            steps = [s.split(" ")[0] for s in candidate.text.split(SEP) if s]
            values = tuple(VALUES[s] for s in steps)
            scored.append(CandidateScore(values[-1], values))
        return Scores(tuple(scored), tokens=len(candidates))


async def search(
    name: str, params: dict[str, Any], delay_s: float = 0.0
) -> tuple[StrategyResult, ScriptedBackend, PathPRM]:
    backend = ScriptedBackend(children, delay_s=delay_s)
    prm = PathPRM()
    strategy = get_strategy(name)
    parsed = parse_params(strategy, {"verifier": "prm", "return_trace": True, **params}, CONTEXT)
    ctx = StrategyContext(backend=backend, request_id="r", verifiers={"prm": prm})
    return await strategy.run(chat_request(max_tokens=64), parsed, ctx), backend, prm


def expanded(tree: dict[str, Any], depth: int) -> list[str]:
    """Labels of the nodes at `depth` (root's children are depth 1) that have children."""
    level = [tree]
    for _ in range(depth):
        level = [child for node in level for child in node["children"]]
    return [node["text"].strip() for node in level if node["children"]]


def tree_tokens(tree: dict[str, Any]) -> int:
    tokens: int = tree["tokens"]
    return tokens + sum(tree_tokens(child) for child in tree["children"])


async def test_beam_search_keeps_exactly_the_top_beams() -> None:
    result, backend, prm = await search("beam_search", {"n": 4, "beam_width": 2})
    assert result.trace is not None
    tree = result.trace["tree"]
    # Depth 1: s0a 0.5, s0b 0.9, s0c 0.2, s0d 0.6 -> keep N/M = 2: s0b and s0d.
    assert expanded(tree, 1) == ["s0b", "s0d"]
    # Depth 2: each kept beam gives s1a, s1b (scores 0.3, 0.4) -> keep the two s1b's.
    assert expanded(tree, 2) == ["s1b", "s1b"]
    assert result.choices[0].content == "s0b\n\ns1b\n\ns2a done"
    assert result.stopped_early is None
    # One request for the root (n=4), then one per kept prefix with n=M=2.
    assert [p.n for p in backend.sampled] == [4, 2, 2, 2, 2]
    assert [prefix_of(c.prompt) for c in backend.calls[1:3]] == ["s0b\n\n", "s0d\n\n"]
    # One verifier call per iteration, covering every new partial solution.
    assert [len(call) for call in prm.calls] == [4, 4, 4]
    # Usage adds up to the tokens the tree shows.
    assert result.usage.completion_tokens == result.trace["tokens"] == tree_tokens(tree)


async def test_beam_search_lookahead_scores_the_extension() -> None:
    result, backend, prm = await search("beam_search", {"n": 4, "beam_width": 4, "lookahead": 1})
    # With a lookahead of one step, depth-1 steps are judged by their greedy next step (s1a).
    assert prm.calls[0] == [f"s0{x}\n\ns1a\n\n" for x in "abcd"]
    assert result.trace is not None
    assert result.usage.completion_tokens == tree_tokens(result.trace["tree"])


def test_beam_search_n_must_be_a_multiple_of_the_width() -> None:
    with pytest.raises(InvalidParamsError, match="multiple"):
        parse_params(
            get_strategy("beam_search"), {"verifier": "prm", "n": 6, "beam_width": 4}, CONTEXT
        )


async def test_dvts_subtrees_stay_independent() -> None:
    result, backend, _ = await search("dvts", {"n": 4, "beam_width": 2})
    assert result.trace is not None and result.trace["subtrees"] == 2
    tree = result.trace["tree"]
    # The root's 4 first steps split into {s0a, s0b} and {s0c, s0d}; each subtree keeps its
    # own best (s0b, s0d), although beam search would keep s0b and s0d for other reasons.
    assert expanded(tree, 1) == ["s0b", "s0d"]
    # One request for all subtrees' first steps, then one per subtree.
    assert backend.sampled[0].n == 4
    first = tree["children"]
    assert [c["text"].strip() for c in first] == ["s0a", "s0b", "s0c", "s0d"]
    # Below s0d, only s0d's own children were ever expanded.
    under_d = first[3]["children"]
    assert [c["text"].strip() for c in under_d] == ["s1a", "s1b"]
    assert result.choices[0].content.startswith("s0b")
    assert result.usage.completion_tokens == tree_tokens(tree)


async def test_dvts_differs_from_beam_search_when_one_subtree_is_best_twice() -> None:
    # Make the first subtree hold the two best first steps: beam search keeps both, DVTS one.
    VALUES["s0a"], saved = 0.85, VALUES["s0a"]
    try:
        beam, _, _ = await search("beam_search", {"n": 4, "beam_width": 2})
        dvts, _, _ = await search("dvts", {"n": 4, "beam_width": 2})
    finally:
        VALUES["s0a"] = saved
    assert beam.trace is not None and dvts.trace is not None
    assert expanded(beam.trace["tree"], 1) == ["s0a", "s0b"]
    assert expanded(dvts.trace["tree"], 1) == ["s0b", "s0d"]


def test_puct_matches_the_formula() -> None:
    parent = Node("", 0, visits=9)
    child = Node("x", 1, parent=parent, prior=0.25, visits=2, value_sum=1.2)
    assert puct(parent, child, 1.5) == pytest.approx(0.6 + 1.5 * 0.25 * math.sqrt(9) / 3)
    fresh = Node("y", 1, parent=parent, prior=0.5)
    assert puct(parent, fresh, 2.0) == pytest.approx(0 + 2.0 * 0.5 * 3 / 1)


def test_selection_follows_puct_and_priors_are_a_softmax() -> None:
    root = Node("", 0)
    kids = [Node(t, 1, parent=root, mean_logprob=lp) for t, lp in (("a", -1.0), ("b", -2.0))]
    root.children = kids
    set_priors(kids)
    assert kids[0].prior == pytest.approx(1 / (1 + math.exp(-1)))
    backpropagate(kids[0], 0.2)
    backpropagate(kids[1], 0.9)
    assert root.visits == 2
    assert root.value_sum == pytest.approx(1.1)
    c = 0.5
    expected = max(kids, key=lambda k: k.value + c * k.prior * math.sqrt(2) / (1 + k.visits))
    assert select(root, c) is expected


async def test_mcts_reaches_the_best_leaf() -> None:
    result, backend, _ = await search("mcts", {"iterations": 12, "k": 4, "exploration": 0.5})
    assert result.choices[0].content == "s0b\n\ns1c\n\ns2a done"
    assert result.stopped_early is None
    assert result.trace is not None
    tree = result.trace["tree"]
    assert tree["visits"] >= 12
    # Each expansion is one request for all k children of one prefix.
    assert all(p.n == 4 for p in backend.sampled)
    assert result.usage.completion_tokens == tree_tokens(tree)


async def test_mcts_rollout_evaluation_scores_complete_solutions() -> None:
    result, _, prm = await search("mcts", {"iterations": 3, "k": 2, "evaluation": "rollout"})
    assert all(text.endswith(" done") for text in prm.calls[0])
    assert result.trace is not None
    assert result.usage.completion_tokens == tree_tokens(result.trace["tree"])


@pytest.mark.parametrize("name", ["beam_search", "dvts", "mcts"])
async def test_token_budget_stops_early_with_the_best_so_far(name: str) -> None:
    result, _, _ = await search(name, {"max_search_tokens": 3})
    assert result.stopped_early is not None and "token budget" in result.stopped_early
    assert result.stop == "budget"
    assert result.choices[0].content  # the best partial solution, not nothing
    assert result.choices[0].finish_reason == "length"


@pytest.mark.parametrize("name", ["beam_search", "dvts", "mcts"])
async def test_deadline_stops_calls_in_flight(name: str) -> None:
    result, _, _ = await search(name, {"max_search_seconds": 0.3}, delay_s=0.1)
    assert result.stopped_early is not None and "time budget" in result.stopped_early
    assert result.stop == "deadline"


def test_search_budget_ceilings_are_enforced() -> None:
    context = ParamsContext(
        verifiers=frozenset({"prm"}),
        limits=Limits(search_default_tokens=100, search_max_tokens=100, max_n=8),
    )
    with pytest.raises(InvalidParamsError, match="max_search_tokens"):
        parse_params(get_strategy("mcts"), {"verifier": "prm", "max_search_tokens": 101}, context)
    for name in ("beam_search", "dvts", "particle_filtering"):
        with pytest.raises(InvalidParamsError, match="at most 8"):
            parse_params(get_strategy(name), {"verifier": "prm", "n": 16}, context)


@pytest.mark.parametrize("name", ["beam_search", "dvts", "mcts"])
async def test_a_solution_cut_by_max_tokens_finishes_with_length(name: str) -> None:
    backend = ScriptedBackend(children)
    strategy = get_strategy(name)
    parsed = parse_params(strategy, {"verifier": "prm"}, CONTEXT)
    ctx = StrategyContext(backend=backend, request_id="r", verifiers={"prm": PathPRM()})
    # Two tokens end every solution in its first step: "s0a" and the separator.
    result = await strategy.run(chat_request(max_tokens=2), parsed, ctx)
    assert result.choices[0].finish_reason == "length"
    assert result.stopped_early is None
