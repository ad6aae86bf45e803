"""CallStats: phase times on a wall clock, so calls a strategy makes at once count once."""

from __future__ import annotations

import pytest

from backends.base import Completion, Generation
from strategies.accounting import CallStats


class Clock:
    """A clock the test sets by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_overlapping_calls_count_once(clock: Clock) -> None:
    stats = CallStats(clock=clock)
    with stats.backend_call():
        clock.now = 1.0
        with stats.backend_call():
            clock.now = 3.0
        clock.now = 4.0
    clock.now = 10.0
    with stats.backend_call():
        clock.now = 11.0
    assert stats.generate_seconds == 5.0
    assert stats.backend_calls == {"ok": 3}


def test_queueing_is_taken_out_of_generating_and_bounded_by_it(clock: Clock) -> None:
    stats = CallStats(clock=clock)
    with stats.backend_call():
        clock.now = 2.0
    stats.generated(Generation((Completion("a", "stop", 1),) * 3, 5, queue_seconds=0.5))
    assert (stats.queue_seconds, stats.generate_seconds, stats.candidates) == (0.5, 1.5, 3)
    # Calls queued at once report overlapping waits; the phase cannot exceed the wall clock.
    stats.generated(Generation((), 0, queue_seconds=9.0))
    assert (stats.queue_seconds, stats.generate_seconds) == (2.0, 0.0)


def test_failed_calls_are_timed_and_counted_by_outcome(clock: Clock) -> None:
    stats = CallStats(clock=clock)
    with pytest.raises(TimeoutError), stats.verifier_call("prm"):
        clock.now = 1.0
        raise TimeoutError
    with pytest.raises(ValueError), stats.verifier_call("prm"):
        raise ValueError
    assert stats.verify_seconds == 1.0
    assert stats.verifier_calls == {("prm", "timeout"): 1, ("prm", "error"): 1}
