"""Search strategies end to end on the embedded model, with llm_judge as the process reward
model: each returns an answer, a trace of its tree, and usage equal to the tokens the tree shows."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e

QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Solve it step by step, one step per paragraph."},
    {"role": "user", "content": "What is 3 + 5?"},
]
SMALL = {"verifier": "llm_judge", "max_step_tokens": 16, "return_trace": True}


def tree_tokens(node: dict[str, Any]) -> int:
    return int(node["tokens"]) + sum(tree_tokens(child) for child in node["children"])


@pytest.mark.parametrize(
    ("strategy", "params"),
    [
        ("beam_search", {"n": 4, "beam_width": 2, "num_iterations": 2}),
        ("dvts", {"n": 4, "beam_width": 2, "num_iterations": 2}),
        ("mcts", {"iterations": 3, "k": 2, "max_depth": 3}),
        ("particle_filtering", {"n": 4, "num_iterations": 2}),
    ],
)
async def test_search_answers_with_a_tree_whose_tokens_are_the_usage(
    client: openai.AsyncOpenAI, strategy: str, params: dict[str, Any]
) -> None:
    response = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=48,
        extra_body={"reasoning_strategy": strategy, "reasoning_params": {**SMALL, **params}},
    )
    trace = (response.model_extra or {}).get("reasoning_trace")
    assert isinstance(trace, dict) and trace["strategy"] == strategy
    assert response.choices[0].message.content == trace["answer"]
    assert trace["answer"], "the search should return some text"
    usage = response.usage
    assert usage is not None
    assert usage.completion_tokens == trace["tokens"] == tree_tokens(trace["tree"])
    assert (usage.model_extra or {}).get("verifier_tokens", 0) > 0
    stopped = (response.model_extra or {}).get("reasoning_stopped_early")
    assert stopped == trace["stopped_early"]


async def test_search_token_budget_is_reported(client: openai.AsyncOpenAI) -> None:
    # Steps of at most 2 tokens rarely end a solution, and the first step's two beams spend the
    # whole budget of 2, so the second step finds it spent. (With 16-token steps and a budget
    # of 8, both beams could finish in the first step, and the search would end unspent.)
    response = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=48,
        extra_body={
            "reasoning_strategy": "beam_search",
            "reasoning_params": {
                **SMALL,
                "n": 2,
                "beam_width": 1,
                "max_step_tokens": 2,
                "max_search_tokens": 2,
            },
        },
    )
    stopped = (response.model_extra or {}).get("reasoning_stopped_early")
    assert isinstance(stopped, str) and "token budget" in stopped


async def test_a_search_out_of_time_answers_with_its_partial_solution(
    client: openai.AsyncOpenAI,
) -> None:
    # A budget shorter than one step: the first step is never cut, so there is an answer.
    response = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=48,
        extra_body={
            "reasoning_strategy": "mcts",
            "reasoning_params": {**SMALL, "k": 2, "budget": {"seconds": 0.001}},
        },
    )
    # The first step's solutions may end there or not; either way there is one to answer with.
    assert response.choices[0].message.content
    stopped = (response.model_extra or {}).get("reasoning_stopped_early")
    assert stopped == "time budget reached (0.001 s)"
