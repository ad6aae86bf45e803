"""The server's stop on a signal: not ready first, draining after the delay, forced on the third."""

from __future__ import annotations

import signal

import uvicorn

from backends.scripted import ScriptedBackend
from server.admission import Admission
from server.app import create_app
from server.drain import DrainingServer
from server.settings import DRAIN_MARGIN_S, LimitsSettings, Settings


def draining_server(shutdown_delay_s: float) -> tuple[DrainingServer, Admission]:
    app = create_app(Settings(), backend=ScriptedBackend())
    admission: Admission = app.state.admission
    return DrainingServer(uvicorn.Config(app), admission, shutdown_delay_s), admission


async def test_a_signal_reports_not_ready_and_keeps_serving_through_the_delay() -> None:
    server, admission = draining_server(shutdown_delay_s=3600)
    assert not await server.on_tick(1)
    server.handle_exit(signal.SIGTERM, None)
    assert not await server.on_tick(1)
    assert admission.is_shutting_down
    assert not admission.is_draining
    # A second signal cuts the delay short; a third stops without waiting for requests.
    server.handle_exit(signal.SIGTERM, None)
    assert await server.on_tick(1)
    assert not server.force_exit
    server.handle_exit(signal.SIGINT, None)
    assert server.force_exit


async def test_without_a_delay_the_first_signal_stops_at_the_next_tick() -> None:
    server, admission = draining_server(shutdown_delay_s=0)
    server.handle_exit(signal.SIGINT, None)
    assert await server.on_tick(1)
    assert admission.is_shutting_down
    # The signal is not raised again after the drain, so the process exits 0.
    assert server._captured_signals == []


def test_the_drain_waits_as_long_as_the_longest_request_may_run() -> None:
    limits = LimitsSettings(request_timeout_s=30)
    assert Settings(limits=limits).drain_grace_s == 30 + DRAIN_MARGIN_S
    assert Settings(limits=limits, drain_timeout_s=5).drain_grace_s == 5
