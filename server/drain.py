"""Graceful shutdown: on SIGTERM (or Ctrl+C) report not ready, then drain, then exit 0.

uvicorn alone closes its listening socket the moment the signal arrives, while a load balancer
(a Kubernetes Service, say) may still send new connections until it has seen the pod go. So the
first signal starts two steps:

1. **Not ready** for `--shutdown-delay-s`: `/ready` answers 503, everything else is served as
   usual, so that requests routed here before the balancer noticed still get answers.
2. **Drain**: queued and new generation requests get 503 `shutting_down` with `Retry-After`;
   uvicorn closes the listener and idle connections, and waits up to `--drain-timeout-s` for
   the requests in flight (streams included) before it cancels them; then the app's lifespan
   closes the backends and the process exits 0.

A second signal skips what is left of the delay; a third stops without waiting.
"""

from __future__ import annotations

import gc
import logging
import socket
import time
from types import FrameType

import uvicorn

from server.admission import Admission

__all__ = ["DrainingServer"]

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, stopping in the two steps above."""

    def __init__(
        self, config: uvicorn.Config, admission: Admission, shutdown_delay_s: float = 0.0
    ) -> None:
        super().__init__(config)
        self.admission = admission
        self.shutdown_delay_s = shutdown_delay_s
        self._signalled_at: float | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # What start-up built (the app, its backends and clients) lives as long as the process:
        # out of the collector's sight, full collections under load walk only what requests
        # allocate, so their pauses stay short.
        gc.freeze()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: it only sets flags, which `on_tick` acts on within 0.1 s. The signal
        # is not recorded for uvicorn to raise again after the shutdown, so a drain exits 0.
        if self._signalled_at is None:
            self._signalled_at = time.monotonic()
        elif self.should_exit:
            self.force_exit = True
        else:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick, which also moves a requested stop from not ready to draining."""
        if self._signalled_at is not None and not self.should_exit:
            if not self.admission.is_shutting_down:
                self.admission.announce_shutdown()
                if self.shutdown_delay_s:
                    logger.info(
                        "shutting down: not ready, still serving for %g s", self.shutdown_delay_s
                    )
            if time.monotonic() - self._signalled_at >= self.shutdown_delay_s:
                self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Turn new requests away, then let uvicorn wait for the ones in flight."""
        queued = self.admission.queued
        self.admission.start_draining()
        logger.info(
            "draining: waiting up to %s s for %d requests in flight; %d queued turned away",
            self.config.timeout_graceful_shutdown,
            self.admission.in_flight,
            queued,
        )
        await super().shutdown(sockets)
