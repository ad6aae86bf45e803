"""The embedded backend's scheduling, queueing and cancellation, with a stand-in for the model."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from backends.base import ChatMessage, ChatPrompt, Completion, Generation, SamplingParams
from backends.embedded import EmbeddedBackend
from backends.embedded_decoding import Cancelled
from backends.embedded_model import LoadedModel
from backends.embedded_scheduler import RoundRobin
from backends.errors import BackendUnavailable

PROMPT = ChatPrompt((ChatMessage("user", "hi"),))
PARAMS = SamplingParams(max_tokens=4)


class StandInDecoding:
    """Takes `max_tokens` steps, or waits for `release` when `max_tokens` is huge, like the real
    `Decoding` it stops at its next step once cancelled."""

    def __init__(self, model: StandInModel, params: SamplingParams, cancel: threading.Event):
        self.model = model
        self.params = params
        self.cancel = cancel
        self.steps = 0

    @property
    def rows(self) -> int:
        return self.params.n

    def step(self) -> bool:
        self.model.started.set()
        if self.cancel.is_set():
            self.model.cancelled.append(self.params.max_tokens)
            raise Cancelled
        self.steps += 1
        if self.params.max_tokens >= StandInModel.UNTIL_RELEASED:
            return self.model.release.wait(0.005)
        return self.steps >= self.params.max_tokens

    def result(self) -> Generation:
        self.model.finished.append(self.params.max_tokens)
        text = "x" * self.steps
        return Generation((Completion(text, "length", self.steps),) * self.params.n, 1)


class StandInModel(LoadedModel):
    """No torch behind it: each request is a `StandInDecoding`, one token per step."""

    UNTIL_RELEASED = 10**9

    def __init__(self) -> None:
        # No torch model behind it, so LoadedModel's own constructor is not called.
        self.release = threading.Event()
        self.started = threading.Event()
        self.cancelled: list[int] = []
        self.finished: list[int] = []

    def start(
        self, prompt: Any, params: Any, cancel: threading.Event, sink: Any, grammar: Any = None
    ) -> Any:
        return StandInDecoding(self, params, cancel)

    def batch(self) -> Any:
        # Stand-ins step on their own; the real model's continuous batch is tested end to end.
        return RoundRobin()


LONG = SamplingParams(max_tokens=StandInModel.UNTIL_RELEASED, n=4)


async def wait_for(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in 5 s")


async def test_full_queue_is_unavailable_not_lost() -> None:
    model = StandInModel()
    backend = EmbeddedBackend(model, max_queue=2)
    first = asyncio.create_task(backend.generate(PROMPT, LONG))
    second = asyncio.create_task(backend.generate(PROMPT, LONG))
    await asyncio.sleep(0.05)
    with pytest.raises(BackendUnavailable, match="queued"):
        await backend.generate(PROMPT, PARAMS)
    model.release.set()
    results = await asyncio.gather(first, second)
    assert [g.completions[0].finish_reason for g in results] == ["length", "length"]
    # Both slots are free again once the model thread is done with them.
    assert (await backend.generate(PROMPT, PARAMS)).completions[0].tokens == 4
    await backend.aclose()


async def test_short_request_finishes_while_a_long_one_runs() -> None:
    model = StandInModel()
    backend = EmbeddedBackend(model, max_queue=4)
    long = asyncio.create_task(backend.generate(PROMPT, LONG))
    await asyncio.to_thread(model.started.wait, 5)
    short = await backend.generate(PROMPT, SamplingParams(max_tokens=3))
    assert short.completions[0].tokens == 3
    # Work other than decoding (prompt scoring) also runs between two steps of the long one.
    assert await backend._run(lambda: "scored", None) == "scored"
    assert not long.done() and model.finished == [3]
    model.release.set()
    await long
    assert model.finished == [3, StandInModel.UNTIL_RELEASED]
    await backend.aclose()


async def test_cancelling_the_caller_removes_its_rows() -> None:
    model = StandInModel()
    backend = EmbeddedBackend(model, max_queue=4)
    task = asyncio.create_task(backend.generate(PROMPT, LONG))
    await wait_for(lambda: backend._scheduler.active_rows == 4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The model thread saw the cancellation at the next step and dropped the request's rows.
    await wait_for(lambda: backend._scheduler.active_rows == 0)
    assert model.cancelled == [StandInModel.UNTIL_RELEASED]
    assert (await backend.generate(PROMPT, PARAMS)).completions[0].tokens == 4
    assert backend._pending == 0
    await backend.aclose()


async def test_queue_seconds_counts_the_wait_before_the_first_step() -> None:
    model = StandInModel()
    backend = EmbeddedBackend(model, max_queue=4)
    blocker = threading.Event()
    blocked = asyncio.create_task(backend._run(lambda: blocker.wait(5), None))
    await asyncio.sleep(0.01)
    request = asyncio.create_task(backend.generate(PROMPT, PARAMS))
    await asyncio.sleep(0.05)
    blocker.set()
    await blocked
    assert (await request).queue_seconds >= 0.04
    await backend.aclose()
