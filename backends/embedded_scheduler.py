"""The embedded model's one thread, shared by every request step by step.

Requests are not run one after another: every running request advances one token per step of a
`Batch`, so a short request finishes while a long one is still going instead of waiting behind
it. The model's batch (`backends.embedded_batch.DecodeBatch`) puts the rows of all running
requests in one forward pass (continuous batching); `RoundRobin` steps each request on its own
in turn. Between steps the thread takes what was submitted since: a new request is prefilled and
joins the batch, and other work on the model (prompt scoring) runs whole. A request whose
`cancel` event is set leaves at the next step; a finished one leaves with its result.
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

from backends.errors import BackendUnavailable
from backends.results import Generation

__all__ = ["Batch", "ModelScheduler", "RoundRobin", "Stepper"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class Stepper(Protocol):
    """One request's decoding: `backends.embedded_decoding.Decoding` or a test's stand-in."""

    @property
    def rows(self) -> int:
        """The sequences still generating."""
        ...

    def step(self) -> bool:
        """Advance one token on its own; True once finished (or raise, e.g. when cancelled)."""
        ...

    def result(self) -> Generation:
        """The finished generation."""
        ...


class Batch(Protocol):
    """The running requests, advanced together one token per `step()`."""

    @property
    def rows(self) -> int:
        """Sequences in the batch."""
        ...

    def join(self, stepper: Any) -> bool:
        """Take a new request (its prefill happens here); True if it already finished."""
        ...

    def step(self) -> list[tuple[Any, Exception | None]]:
        """One token for every request; those that left, with None (finished) or the error."""
        ...


class RoundRobin:
    """A `Batch` that steps each request on its own, in turn (no shared forward pass)."""

    def __init__(self) -> None:
        self._members: list[Stepper] = []

    @property
    def rows(self) -> int:
        return sum(m.rows for m in self._members)

    def join(self, stepper: Stepper) -> bool:
        self._members.append(stepper)
        return False

    def step(self) -> list[tuple[Any, Exception | None]]:
        left: list[tuple[Any, Exception | None]] = []
        stay: list[Stepper] = []
        for member in self._members:
            try:
                done = member.step()
            except Exception as exc:
                left.append((member, exc))
                continue
            if done:
                left.append((member, None))
            else:
                stay.append(member)
        self._members = stay
        return left


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


class ModelScheduler:
    """Runs submitted work and interleaves the steps of every running decode on one thread."""

    def __init__(self, batch: Batch, name: str = "embedded-model") -> None:
        self._batch = batch
        self._inbox: deque[_Call | _Decode] = deque()
        self._wake = threading.Condition()
        # Each running request's stepper, with its future and its wait before the prefill.
        self._running: dict[int, tuple[Stepper, Future[tuple[Generation, float]], float]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def active_rows(self) -> int:
        """Sequences of the running requests (for tests and diagnostics)."""
        return self._batch.rows

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
        for _, future, _ in self._running.values():
            future.set_exception(BackendUnavailable("the embedded model was shut down"))

    def _admit(self, job: _Decode) -> None:
        """Start the request and let it join the batch: its prefill happens here."""
        waited = time.perf_counter() - job.submitted
        try:
            stepper = job.start()
            done = self._batch.join(stepper)
            if done:
                job.future.set_result((stepper.result(), waited))
                return
        except Exception as exc:
            job.future.set_exception(exc)
            return
        self._running[id(stepper)] = (stepper, job.future, waited)

    def _round(self) -> None:
        """One step of the batch; finished or failed requests leave with their outcome."""
        if not self._running:
            return
        for stepper, error in self._batch.step():
            _, future, waited = self._running.pop(id(stepper))
            if error is not None:
                future.set_exception(error)
                continue
            try:
                future.set_result((stepper.result(), waited))
            except Exception as exc:
                future.set_exception(exc)


def _settle(future: Future[Any], work: Callable[[], Any]) -> None:
    try:
        future.set_result(work())
    except Exception as exc:
        future.set_exception(exc)
