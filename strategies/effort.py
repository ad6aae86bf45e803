"""How many candidates a request draws when it does not say: OpenAI's `reasoning_effort`.

Every strategy that draws N of something (candidates, beams, particles, traces) takes its
default N from here, so the server reserves for a request exactly what its strategy will draw.
"""

from __future__ import annotations

from strategies.base import StrategyRequest

__all__ = ["EFFORT_N", "effort_n"]

# Candidates per request when neither `reasoning_params.n` nor the request says otherwise.
EFFORT_N = {"none": 1, "minimal": 2, "low": 4, "medium": 8, "high": 16, "xhigh": 32, "max": 64}


def effort_n(request: StrategyRequest, n: int | None, max_n: int) -> int:
    """`n` when given, else the default of the request's `reasoning_effort`, within `max_n`."""
    if n is not None:
        return n
    return min(EFFORT_N[request.reasoning_effort or "medium"], max_n)
