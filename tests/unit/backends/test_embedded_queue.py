"""The embedded backend's queueing and cancellation, with a stand-in for the torch model."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from backends.base import ChatMessage, ChatPrompt, Completion, Generation, SamplingParams
from backends.embedded import EmbeddedBackend
from backends.embedded_model import LoadedModel
from backends.errors import BackendUnavailable

PROMPT = ChatPrompt((ChatMessage("user", "hi"),))
PARAMS = SamplingParams(max_tokens=4)


class SlowModel(LoadedModel):
    """Generates until released or cancelled, like the real per-step hook would."""

    def __init__(self) -> None:
        # No torch model behind it, so LoadedModel's own constructor is not called.
        self.release = threading.Event()
        self.started = threading.Event()
        self.cancelled: list[bool] = []

    def generate(self, prompt: Any, params: Any, cancel: threading.Event, sink: Any) -> Generation:
        self.started.set()
        while not self.release.is_set() and not cancel.is_set():
            self.release.wait(0.01)
        self.cancelled.append(cancel.is_set())
        return Generation((Completion("x", "stop", 1),), prompt_tokens=1)


async def test_full_queue_is_unavailable_not_lost() -> None:
    model = SlowModel()
    backend = EmbeddedBackend(model, max_queue=2)
    first = asyncio.create_task(backend.generate(PROMPT, PARAMS))
    second = asyncio.create_task(backend.generate(PROMPT, PARAMS))
    await asyncio.sleep(0.05)
    with pytest.raises(BackendUnavailable, match="queued"):
        await backend.generate(PROMPT, PARAMS)
    model.release.set()
    results = await asyncio.gather(first, second)
    assert [g.completions[0].text for g in results] == ["x", "x"]
    # Both slots are free again once the worker is done.
    assert (await backend.generate(PROMPT, PARAMS)).prompt_tokens == 1
    await backend.aclose()


async def test_cancelling_the_caller_stops_the_worker() -> None:
    model = SlowModel()
    backend = EmbeddedBackend(model, max_queue=4)
    task = asyncio.create_task(backend.generate(PROMPT, PARAMS))
    await asyncio.to_thread(model.started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The worker saw the cancellation and freed itself; the next request runs at once.
    model.release.set()
    await backend.generate(PROMPT, PARAMS)
    assert model.cancelled[0] is True
    await backend.aclose()
