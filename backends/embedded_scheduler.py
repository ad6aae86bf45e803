"""The embedded model's one thread, shared by every request step by step.

Requests are not run one after another: each running request (its `n` rows and its own KV
cache, a `Decoding`) advances one token per round, in turn, so a short request finishes while a
long one is still going instead of waiting behind it. Between rounds the thread takes what was
submitted since: a new request's prefill is its first step in the next round, and other work on
the model (prompt scoring) runs whole before that round. A request whose `cancel` event is set
raises at its next step and leaves the round; a finished one leaves with its result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from backends.base import Generation
from backends.errors import BackendUnavailable

__all__ = ["ModelScheduler", "Stepper"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class Stepper(Protocol):
    """What the scheduler advances: `backends.embedded_model.Decoding` or a test's stand-in."""

    @property
    def rows(self) -> int:
        """The sequences still generating."""
        ...

    def step(self) -> bool:
        """Advance one token; True once finished (or raise, e.g. when cancelled)."""
        ...

    def result(self) -> Generation:
        """The finished generation."""
        ...


@dataclass
class _Call:
    """Work run whole on the model thread between rounds."""

    work: Callable[[], Any]
    future: Future[Any]


@dataclass
class _Decode:
    """A request to decode: `start` builds its stepper on the model thread."""

    start: Callable[[], Stepper]
    future: Future[tuple[Generation, float]]
    submitted: float
    stepper: Stepper | None = None
    # From submission to its first step: how long it waited behind other work.
    queue_seconds: float | None = None


class ModelScheduler:
    """Runs submitted work and interleaves the steps of every running decode on one thread."""

    def __init__(self, name: str = "embedded-model") -> None:
        self._inbox: deque[_Call | _Decode] = deque()
        self._wake = threading.Condition()
        self._running: list[_Decode] = []
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def active_rows(self) -> int:
        """Sequences of running decodes as of the last round (for tests and diagnostics)."""
        return sum(
            d.stepper.rows
            for d in list(self._running)
            if d.stepper is not None and not d.future.done()
        )

    def call(self, work: Callable[[], _T]) -> Future[_T]:
        """Run `work` on the model thread between two rounds of steps."""
        future: Future[_T] = Future()
        self._put(_Call(work, future))
        return future

    def decode(self, start: Callable[[], Stepper]) -> Future[tuple[Generation, float]]:
        """Decode what `start` (run on the model thread) returns, interleaved with the others;
        the result is the generation and the seconds it waited before its first step."""
        future: Future[tuple[Generation, float]] = Future()
        self._put(_Decode(start, future, time.perf_counter()))
        return future

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop after the current round and wait for the thread; whatever is queued or running
        then is given up."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def _put(self, job: _Call | _Decode) -> None:
        with self._wake:
            if self._closed:
                job.future.cancel()
                return
            self._inbox.append(job)
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._inbox and not self._running and not self._closed:
                    self._wake.wait()
                if self._closed:
                    break
                jobs = list(self._inbox)
                self._inbox.clear()
            for job in jobs:
                if not job.future.set_running_or_notify_cancel():
                    continue
                if isinstance(job, _Call):
                    _settle(job.future, job.work)
                else:
                    self._admit(job)
            self._round()
        for job in self._inbox:
            job.future.cancel()
        for running in self._running:
            running.future.set_exception(BackendUnavailable("the embedded model was shut down"))

    def _admit(self, job: _Decode) -> None:
        try:
            job.stepper = job.start()
        except Exception as exc:
            job.future.set_exception(exc)
            return
        self._running.append(job)

    def _round(self) -> None:
        """One step of every running decode; finished or failed ones leave."""
        still: list[_Decode] = []
        for job in self._running:
            assert job.stepper is not None
            if job.queue_seconds is None:
                job.queue_seconds = time.perf_counter() - job.submitted
            try:
                done = job.stepper.step()
                if done:
                    job.future.set_result((job.stepper.result(), job.queue_seconds))
            except Exception as exc:
                job.future.set_exception(exc)
                continue
            if not done:
                still.append(job)
        self._running = still


def _settle(future: Future[Any], work: Callable[[], Any]) -> None:
    try:
        future.set_result(work())
    except Exception as exc:
        future.set_exception(exc)
