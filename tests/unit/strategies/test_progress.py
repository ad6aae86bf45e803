"""`stream_progress`: the lines a voting strategy or a search sends while it is still deciding."""

from __future__ import annotations

from typing import Any

import pytest

from backends.scripted import ScriptedBackend
from strategies.base import ChoiceDelta, ParamsContext, Progress, StrategyResult
from strategies.context import StrategyContext
from strategies.limits import Limits
from strategies.registry import get_strategy, parse_params
from tests.factories import TableVerifier, chat_request
from tests.unit.strategies.test_search import PathPRM, children
from verifiers.base import Verifier

CONTEXT = ParamsContext(verifiers=frozenset({"v", "prm"}), limits=Limits(max_n=16))


async def run(
    name: str,
    backend: ScriptedBackend,
    params: dict[str, Any],
    verifiers: dict[str, Verifier] | None = None,
    *,
    is_streaming: bool = True,
) -> tuple[StrategyResult, list[ChoiceDelta]]:
    """Run `name` with `stream_progress` as the server would, the deltas it sent collected."""
    sent: list[ChoiceDelta] = []

    async def sink(delta: ChoiceDelta) -> None:
        sent.append(delta)

    strategy = get_strategy(name)
    parsed = parse_params(strategy, {"stream_progress": True, **params}, CONTEXT)
    ctx = StrategyContext(
        backend=backend,
        request_id="r",
        verifiers=verifiers or {},
        sink=sink if is_streaming else None,
        is_progress_asked=True,
    )
    result = await strategy.run(chat_request(max_tokens=64), parsed, ctx)
    return result, sent


def lines(sent: list[ChoiceDelta]) -> list[str]:
    """The progress lines sent; every delta must be one, on the first choice, with no content."""
    assert all(isinstance(d, Progress) and d.index == 0 and not d.content for d in sent)
    return [d.reasoning for d in sent]


async def test_a_vote_in_waves_reports_each_wave_with_its_leader() -> None:
    texts = ["it is 4", "so 5", "4", "6", "4", "4", "4", "4"]
    early_stop = {"method": "beta", "wave": 4, "min_samples": 4}
    result, sent = await run(
        "majority_vote", ScriptedBackend(texts), {"n": 8, "early_stop": early_stop}
    )
    assert lines(sent) == [
        "sampled 4 of 8; leading answer 4 with 2 of 4 votes\n",
        "sampled 8 of 8; leading answer 4 with 6 of 8 votes\n",
    ]
    assert result.choices[0].content == "it is 4"


async def test_a_vote_in_one_call_reports_once() -> None:
    _, sent = await run("majority_vote", ScriptedBackend(["a 7", "b 9", "c 9"]), {"n": 3})
    assert lines(sent) == ["sampled 3 of 3; leading answer 9 with 2 of 3 votes\n"]


async def test_a_vote_with_no_answer_yet_says_so() -> None:
    backend = ScriptedBackend(["no idea"])
    _, sent = await run("majority_vote", backend, {"n": 2, "answer_format": "boxed"})
    assert lines(sent) == ["sampled 2 of 2; no answer yet\n"]


async def test_a_long_answer_is_shown_on_one_line_cut_short() -> None:
    text = "the answer\nis a very long sentence that goes on and on and on"
    backend = ScriptedBackend([text])
    _, sent = await run("majority_vote", backend, {"n": 1, "answer_format": "full_text"})
    (line,) = lines(sent)
    shown = "the answer is a very long sentence that…"
    assert line == f"sampled 1 of 1; leading answer {shown} with 1 of 1 votes\n"


@pytest.mark.parametrize("name", ["best_of_n", "weighted_vote"])
async def test_a_scored_wave_reports_the_best_score_and_its_answer(name: str) -> None:
    texts = ["so 3", "it is 4", "maybe 5"]
    verifier = TableVerifier({"so 3": 0.2, "it is 4": 0.9, "maybe 5": 0.5})
    _, sent = await run(name, ScriptedBackend(texts), {"n": 3, "verifier": "v"}, {"v": verifier})
    assert lines(sent) == ["sampled 3 of 3; best score 0.900 (answer 4)\n"]


async def test_a_search_reports_each_step_with_the_best_score_yet() -> None:
    # Beams of the synthetic tree of test_search: s0b (0.9) leads until s2a (0.99) finishes.
    params = {"verifier": "prm", "n": 4, "beam_width": 2}
    result, sent = await run("beam_search", ScriptedBackend(children), params, {"prm": PathPRM()})
    assert lines(sent) == [
        "step 1: best score 0.900\n",
        "step 2: best score 0.900\n",
        "step 3: best score 0.990\n",
    ]
    assert result.choices[0].content.endswith("s2a done")


@pytest.mark.parametrize("name", ["dvts", "mcts"])
async def test_every_search_reports_its_steps(name: str) -> None:
    params: dict[str, Any] = {"verifier": "prm", "n": 4, "beam_width": 2}
    if name == "mcts":
        params = {"verifier": "prm", "iterations": 3}
    _, sent = await run(name, ScriptedBackend(children), params, {"prm": PathPRM()})
    reported = lines(sent)
    assert reported[0] == "step 1: best score 0.900\n"
    assert [line.split(":")[0] for line in reported] == [
        f"step {i}" for i in range(1, len(reported) + 1)
    ]


async def test_nothing_is_reported_to_a_client_that_does_not_stream() -> None:
    texts = ["it is 4", "so 5"]
    plain, sent = await run("majority_vote", ScriptedBackend(texts), {"n": 2}, is_streaming=False)
    assert sent == []
    assert plain.choices[0].content == "it is 4"


async def test_nothing_is_reported_unless_asked() -> None:
    sent: list[ChoiceDelta] = []

    async def sink(delta: ChoiceDelta) -> None:
        sent.append(delta)

    strategy = get_strategy("majority_vote")
    parsed = parse_params(strategy, {"n": 2}, CONTEXT)
    ctx = StrategyContext(backend=ScriptedBackend(["4"]), request_id="r", sink=sink)
    await strategy.run(chat_request(), parsed, ctx)
    assert sent == []
