"""Child server processes for the benchmarks and the tests: start them, wait until they answer,
stop them, and fail with the log's tail rather than hang.

- `Services` starts child processes in their own process groups, each logging to a file, and
  stops every one of them when its block ends (also on Ctrl-C, and on SIGTERM when asked).
- `Service.wait_ready` polls an HTTP path until it answers 200; `Service.wait_until` polls any
  probe. Either fails at once, with the log's tail, if the process exits first. `poll` and
  `answers_200` do the same for a server started some other way (a container).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["Service", "ServiceError", "Services", "answers_200", "free_port", "poll"]

_POLL_S = 0.1


class ServiceError(RuntimeError):
    """A child process exited or never became ready: the message carries its log's tail."""


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    """A child process in its own process group, logging to a file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, message: str) -> ServiceError:
        """An error naming the service, with its log's tail."""
        return ServiceError(
            f"{self.name} {message}\n--- log tail ({self.log}) ---\n{self.log_tail()}"
        )

    def wait_until(self, probe: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll `probe` until it holds; fail if the process exits or `timeout_s` passes."""
        if poll(probe, timeout_s, give_up=lambda: self.process.poll() is not None):
            return
        code = self.process.poll()
        if code is not None:
            raise self.failure(f"exited with {code} before it was ready")
        raise self.failure(f"not ready after {timeout_s:.0f} s ({what})")

    def wait_ready(self, path: str = "/health", timeout_s: float = 60.0) -> None:
        """Poll GET url+path until it answers 200."""
        url = self.url + path
        self.wait_until(lambda: answers_200(url), timeout_s, f"GET {url}")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the whole group, then SIGKILL to whatever is left after `grace_s`."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace_s)
        # Workers a server forked may outlive their parent; the group still names them.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


def answers_200(url: str) -> bool:
    """Whether GET `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def poll(
    probe: Callable[[], bool], timeout_s: float, give_up: Callable[[], bool] = lambda: False
) -> bool:
    """Call `probe` every 0.1 s until it holds (True), or `give_up` holds or `timeout_s` passes
    (False)."""
    deadline = time.monotonic() + timeout_s
    while not give_up():
        if probe():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_S)
    return False


class Services(contextlib.AbstractContextManager["Services"]):
    """Every child process of a run; all of them are stopped when the `with` block ends.

    Logs go to `log_dir` (a new temporary directory by default), kept afterwards unless
    `keep_logs` is false. With `interrupt_on_sigterm`, a SIGTERM ends the run as Ctrl-C does, so
    the children are stopped on the way out (a script's choice: it replaces the handler for the
    block)."""

    def __init__(
        self,
        log_dir: Path | None = None,
        *,
        keep_logs: bool = True,
        interrupt_on_sigterm: bool = True,
        grace_s: float = 10.0,
    ) -> None:
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="ttc-services-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._keep_logs = keep_logs
        self._interrupt_on_sigterm = interrupt_on_sigterm
        self._grace_s = grace_s
        self._started: list[Service] = []
        self._previous_sigterm: Any = None

    def __enter__(self) -> Services:
        if self._interrupt_on_sigterm:
            self._previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for service in reversed(self._started):
                service.stop(self._grace_s)
        finally:
            if self._interrupt_on_sigterm:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
            if not self._keep_logs:
                shutil.rmtree(self.log_dir, ignore_errors=True)

    def start(
        self, name: str, argv: Sequence[str], url: str, env: Mapping[str, str] | None = None
    ) -> Service:
        """Start `argv` (which will serve at `url`) with `env` over this environment."""
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                # Its own session: Ctrl-C reaches only us, and killpg reaches its workers too.
                start_new_session=True,
            )
        service = Service(name, process, log, url)
        self._started.append(service)
        return service

    def stop(self, service: Service) -> None:
        """Stop one service before the block ends."""
        service.stop(self._grace_s)
        self._started.remove(service)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
