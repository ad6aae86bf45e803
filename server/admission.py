"""Admission control: how many generation requests run at once, how many wait, and draining.

A generation request (`POST /v1/chat/completions`, `/v1/completions`, `/v1/responses`) takes
one of `limits.max_concurrent_requests` slots before the app parses it, and holds it until its
response has been sent (a stream until its last chunk). When every slot is taken it waits, first
come first served, in a queue of at most `limits.max_queued_requests`, for at most
`limits.queue_timeout_s`; past either bound it gets 503 `overloaded` with `Retry-After` at once.
Shutting down has two steps (server.drain runs them): first `/ready` fails while requests are
still served, so that load balancers stop sending new ones; then the server drains: queued and
new generation requests get 503 `shutting_down` and what runs may finish. Other routes
(`/health`, `/ready`, `/metrics`, `/v1/models`) are never queued.

The hot path is a counter: a request that finds a free slot and nobody queued takes it without
suspending; only a queued request allocates a future and a timer, and a freed slot is handed
straight to the first waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import Overloaded, ServerBusy, ShuttingDown, send_error
from server.metrics import Metrics
from server.scopes import routed_path
from server.settings import LimitsSettings

__all__ = ["GENERATION_PATHS", "Admission", "AdmissionMiddleware"]

# The routes that run strategies, and so take a slot.
GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})

# A waiter's future resolves to None when it is given a slot, or to the reason it is turned away.
_Waiter = asyncio.Future[str | None]


class Admission:
    """The slots and the wait queue of one app; one event loop uses it, so no locks."""

    def __init__(self, limits: LimitsSettings, metrics: Metrics) -> None:
        self.max_in_flight = limits.max_concurrent_requests
        self.max_queued = limits.max_queued_requests
        self.queue_timeout_s = limits.queue_timeout_s
        self.in_flight = 0
        self.is_shutting_down = False
        self.is_draining = False
        self._waiters: deque[_Waiter] = deque()
        self._metrics = metrics
        metrics.watch_admission(
            lambda: self.in_flight, lambda: len(self._waiters), lambda: self.is_shutting_down
        )

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue if need be; raise `ServerBusy` if turned away."""
        if self.is_draining:
            raise self._rejected("shutting_down")
        if self.in_flight < self.max_in_flight and not self._waiters:
            self.in_flight += 1
            return
        if len(self._waiters) >= self.max_queued:
            raise self._rejected("queue_full")
        loop = asyncio.get_running_loop()
        waiter: _Waiter = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(self.queue_timeout_s, self._turn_away, waiter, "queue_timeout")
        try:
            reason = await waiter
        except BaseException:
            # Cancelled while queued; if the slot was handed over meanwhile, pass it on.
            if waiter.done() and not waiter.cancelled() and waiter.result() is None:
                self.release()
            raise
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        if reason is not None:
            raise self._rejected(reason)

    def release(self) -> None:
        """Give a slot back: to the first request still waiting, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands; in_flight stays
                return
        self.in_flight -= 1

    def announce_shutdown(self) -> None:
        """Report not ready from now on, and keep serving until `start_draining`."""
        self.is_shutting_down = True

    def start_draining(self) -> None:
        """Take nothing new: turn away what waits and what comes; what runs may finish."""
        self.is_shutting_down = self.is_draining = True
        while self._waiters:
            self._turn_away(self._waiters.popleft(), "shutting_down")

    def _turn_away(self, waiter: _Waiter, reason: str) -> None:
        if not waiter.done():
            waiter.set_result(reason)

    def _rejected(self, reason: str) -> ServerBusy:
        self._metrics.reject(reason)
        if reason == "shutting_down":
            return ShuttingDown("The server is shutting down; retry the request.")
        if reason == "queue_full":
            return Overloaded(
                f"The server is at capacity ({self.max_in_flight} requests running, "
                f"{self.max_queued} waiting); retry the request later."
            )
        return Overloaded(
            f"No slot freed within {self.queue_timeout_s:g} s; retry the request later."
        )


class AdmissionMiddleware:
    """Pure ASGI: generation requests take a slot before the app sees them and free it once
    their response is sent; turned-away requests get the 503 error object with Retry-After."""

    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or routed_path(scope) not in GENERATION_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            await self.admission.acquire()
        except ServerBusy as exc:
            await send_error(send, exc)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.release()
