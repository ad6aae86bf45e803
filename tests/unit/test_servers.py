"""The test harness's server start-up fails clearly, with the log's tail, and never hangs."""

from __future__ import annotations

import sys
import time

import pytest

from tests.factories import free_port
from tests.servers import ServerFailed, ServerSpec, server_processes


def test_a_server_that_exits_fails_with_its_log_tail() -> None:
    script = "print('cannot load the model: /no/such/dir'); raise SystemExit(3)"
    spec = ServerSpec("broken", [sys.executable, "-c", script], free_port())
    with pytest.raises(ServerFailed, match=r"(?s)broken exited with 3.*cannot load the model"):
        with server_processes(spec):
            pass


def test_a_server_that_never_answers_fails_at_the_deadline() -> None:
    script = "print('still loading', flush=True); import time; time.sleep(600)"
    spec = ServerSpec("silent", [sys.executable, "-c", script], free_port())
    started = time.monotonic()
    with pytest.raises(ServerFailed, match=r"(?s)silent not ready after 2 s.*still loading"):
        with server_processes(spec, ready_timeout_s=2):
            pass
    # The sleeping process was stopped, not waited for.
    assert time.monotonic() - started < 60
