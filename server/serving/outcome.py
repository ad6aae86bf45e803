"""How a request ends: past its deadline a 504, and the `status` label it is counted under."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from server.errors import RequestTimeout, error_status

__all__ = ["request_status", "within_deadline"]

_T = TypeVar("_T")


async def within_deadline(work: Awaitable[_T], timeout_s: float) -> _T:
    """Await `work` for at most `timeout_s`; past it, cancel it and raise `RequestTimeout` (504).

    A call inside that timed out on its own, before the deadline, keeps its error: it says which.
    """
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            return await work
    except TimeoutError as exc:
        if not deadline.expired():
            raise
        raise RequestTimeout(f"The request did not finish within {timeout_s:g} s.") from exc


def request_status(exc: BaseException | None) -> str:
    """The `status` label of a request that ended with `exc` (None: it succeeded)."""
    if exc is None:
        return "ok"
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        # The client went away (a stream's generator is closed with GeneratorExit).
        return "cancelled"
    code = error_status(exc)
    if code == 504:
        return "timeout"
    if code in (502, 503):
        return "backend_error"
    return "client_error" if code < 500 else "server_error"
