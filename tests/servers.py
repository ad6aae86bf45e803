"""Real server processes for tests, started and awaited by `bench.processes` (the one way the
benchmarks and the tests start servers): a clear failure with the log's tail, never a hang."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from bench.processes import Service, ServiceError, Services, free_port

# The tests' name for a server that exited or never became ready.
ServerFailed = ServiceError


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


def _services() -> Services:
    # Logs are dropped with the servers; pytest keeps its own SIGTERM handling.
    return Services(keep_logs=False, interrupt_on_sigterm=False, grace_s=30.0)


def _start(services: Services, spec: ServerSpec) -> Service:
    return services.start(spec.name, spec.command, spec.url, spec.env)


@contextlib.contextmanager
def gateway_process(
    *args: str, ready_timeout_s: float = 600.0, env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """Run `ttc-server` on a free loopback port (with `env` over the environment) until the
    block ends; yields its base URL."""
    with gateway_service(*args, ready_timeout_s=ready_timeout_s, env=env) as gateway:
        yield gateway.url


@contextlib.contextmanager
def gateway_server(
    *args: str, ready_timeout_s: float = 600.0
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """As `gateway_process`, and the process too, for tests that signal it."""
    with gateway_service(*args, ready_timeout_s=ready_timeout_s) as gateway:
        yield gateway.url, gateway.process


@contextlib.contextmanager
def gateway_service(
    *args: str, ready_timeout_s: float = 600.0, env: Mapping[str, str] | None = None
) -> Iterator[Service]:
    """As `gateway_process`, yielding the running service: its URL, process and log file
    (stdout and stderr), for tests that read what it logs."""
    port = free_port()
    command = [sys.executable, "-m", "server", "--port", str(port), *args]
    spec = ServerSpec("ttc-server", command, port, dict(env or {}))
    with _services() as services:
        gateway = _start(services, spec)
        gateway.wait_ready(spec.health, ready_timeout_s)
        yield gateway


@contextlib.contextmanager
def server_processes(*specs: ServerSpec, ready_timeout_s: float = 600.0) -> Iterator[None]:
    """Start every server at once, wait until all are ready, and stop them all afterwards."""
    with _services() as services:
        started = [_start(services, spec) for spec in specs]
        # One deadline for all: the later ones started while the first was awaited.
        deadline = time.monotonic() + ready_timeout_s
        for spec, service in zip(specs, started, strict=True):
            service.wait_ready(spec.health, deadline - time.monotonic())
        yield


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
    with _services() as services:
        redis = services.start("redis-server", [*command, "no"], f"redis://127.0.0.1:{port}")
        redis.wait_until(lambda: _answers_ping(port), ready_timeout_s, "PING")
        yield f"{redis.url}/0"


def _answers_ping(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")
    return False
