"""Real server processes for tests: a clear failure with the log tail, never a hang."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.factories import free_port


class ServerFailed(RuntimeError):
    """A server process exited or never became ready."""


@dataclass(frozen=True)
class ServerSpec:
    """A server to start: a command that answers 200 on `health` at `port` once it is ready."""

    name: str
    command: Sequence[str]
    port: int
    env: Mapping[str, str] = field(default_factory=dict)
    health: str = "/health"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def gateway_process(*args: str, ready_timeout_s: float = 600.0) -> Iterator[str]:
    """Run `ttc-server` on a free loopback port until the block ends; yields its base URL."""
    with gateway_server(*args, ready_timeout_s=ready_timeout_s) as (url, _):
        yield url


@contextlib.contextmanager
def gateway_server(
    *args: str, ready_timeout_s: float = 600.0
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """As `gateway_process`, and the process too, for tests that signal it."""
    port = free_port()
    spec = ServerSpec(
        "ttc-server", [sys.executable, "-m", "server", "--port", str(port), *args], port
    )
    with _started(spec) as (process, log):
        wait_ready(spec, process, log, ready_timeout_s)
        yield spec.url, process


@contextlib.contextmanager
def server_processes(*specs: ServerSpec, ready_timeout_s: float = 600.0) -> Iterator[None]:
    """Start every server at once, wait until all are ready, and stop them all afterwards."""
    with contextlib.ExitStack() as stack:
        running = [stack.enter_context(_started(spec)) for spec in specs]
        deadline = time.monotonic() + ready_timeout_s
        for spec, (process, log) in zip(specs, running, strict=True):
            wait_ready(spec, process, log, deadline - time.monotonic())
        yield


@contextlib.contextmanager
def _started(spec: ServerSpec) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    with tempfile.NamedTemporaryFile(
        "w+", prefix=f"{spec.name}-", suffix=".log", delete=False
    ) as log:
        log_path = Path(log.name)
        process = subprocess.Popen(
            list(spec.command),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **spec.env},
            # Its own process group, so that stopping it also stops the workers it forks.
            start_new_session=True,
        )
    try:
        yield process, log_path
    finally:
        stop(process)
        log_path.unlink(missing_ok=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the process group, then kill what is left of it after a grace period."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_ready(
    spec: ServerSpec, process: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> None:
    """Poll the health path until it answers; fail fast with the log's tail if the process dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(f"{spec.name} exited with {process.returncode}:\n{tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{spec.url}{spec.health}", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise ServerFailed(f"{spec.name} not ready after {timeout_s:.0f} s:\n{tail(log)}")


def tail(log: Path, lines: int = 40) -> str:
    """The last lines of a log file."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def redis_server(ready_timeout_s: float = 30.0) -> Iterator[str]:
    """Run Debian's `redis-server` on a free loopback port, without persistence, until the
    block ends; yields its URL. Fails, never skips, where it is not installed
    (`make install-tools` installs it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerFailed("redis-server is not installed; `make install-tools` installs it")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    spec = ServerSpec("redis-server", [*command, "no"], port)
    with _started(spec) as (process, log):
        deadline = time.monotonic() + ready_timeout_s
        while not _answers_ping(port):
            if process.poll() is not None:
                raise ServerFailed(f"redis-server exited with {process.returncode}:\n{tail(log)}")
            if time.monotonic() > deadline:
                raise ServerFailed(f"redis-server not ready after {ready_timeout_s:.0f} s")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"


def _answers_ping(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")
    return False
