"""A real OpenTelemetry trace backend for the vLLM tests: Arize Phoenix, on free loopback ports.

Phoenix takes OTLP over HTTP (`/v1/traces`, bound to 127.0.0.1 here) and over gRPC (which it
binds on every interface; there is no setting for its host), stores spans in SQLite, and serves
them back through its REST API: `GET /v1/projects` and `GET /v1/projects/{id}/spans?trace_id=`,
both paged by `next_cursor`. It lives in a virtual environment of its own (`make
install-trace-backend`, ~0.9 GB beside vLLM's 3.5 GB), so that neither set of pins constrains
the other; tests run its `phoenix` script as a child process.

Spans reach the REST API asynchronously twice over: the sender batches them (vLLM's
`BatchSpanProcessor` waits `OTEL_BSP_SCHEDULE_DELAY`, 5 s by default) and Phoenix inserts them
in bulk (~0.1 s). `TraceBackend.wait_for_span` polls for them; nothing sleeps a fixed time.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

import httpx

from bench.processes import poll
from tests.factories import free_port
from tests.servers import ServerFailed, ServerSpec, server_processes

__all__ = ["Span", "TraceBackend", "phoenix_executable", "phoenix_spec", "trace_backend"]

_ROOT = Path(__file__).resolve().parents[2]
# The Makefile's PHOENIX_VENV; `make test-vllm` passes its script's path on.
_PHOENIX_ENV = "TTC_PHOENIX"
_DEFAULT_PHOENIX = _ROOT / ".venv-phoenix" / "bin" / "phoenix"
_PAGE = 1000


class Span(TypedDict):
    """One stored span, as plain data: ids in lowercase hex, as W3C `traceparent` spells them."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    attributes: dict[str, Any]
    start_time: datetime
    end_time: datetime
    status_code: str


def phoenix_executable() -> Path:
    """Phoenix's `phoenix` script: $TTC_PHOENIX, else the checkout's `.venv-phoenix`."""
    return Path(os.environ.get(_PHOENIX_ENV) or _DEFAULT_PHOENIX)


@dataclass(frozen=True)
class TraceBackend:
    """A running Phoenix: where to send OTLP, and how to read a trace back."""

    url: str
    grpc_port: int

    @property
    def otlp_http_endpoint(self) -> str:
        """The full OTLP/HTTP traces URL (an exporter given it explicitly adds no path)."""
        return f"{self.url}/v1/traces"

    @property
    def otlp_grpc_endpoint(self) -> str:
        """The OTLP/gRPC endpoint, plaintext."""
        return f"http://127.0.0.1:{self.grpc_port}"

    def vllm_flags(self) -> list[str]:
        """vLLM's flag that turns tracing on, exporting to this backend (with `vllm_env`)."""
        return ["--otlp-traces-endpoint", self.otlp_http_endpoint]

    def vllm_env(self) -> dict[str, str]:
        """The exporter's environment for `vllm_flags`: OTLP over HTTP (vLLM's default is gRPC,
        which Phoenix listens for on every interface), sent every 100 ms instead of every 5 s."""
        return {
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }

    def wait_for_grpc(self, timeout_s: float) -> None:
        """Wait until the gRPC receiver listens too (/healthz answers once the HTTP one does;
        the gRPC server starts in the same lifespan)."""
        if not poll(_listens(self.grpc_port), timeout_s):
            raise ServerFailed(f"phoenix: nothing listens for OTLP/gRPC on {self.grpc_port}")

    def spans(self, trace_id: str) -> list[Span]:
        """Every span stored so far with this trace id, in any project, oldest first."""
        with httpx.Client(base_url=f"{self.url}/v1", timeout=10) as client:
            found = [
                _span(raw)
                for project in _pages(client, "/projects", {})
                for raw in _pages(
                    client,
                    f"/projects/{project['id']}/spans",
                    {"trace_id": trace_id.lower(), "sort": "start_time", "order": "asc"},
                )
            ]
        return sorted(found, key=lambda span: span["start_time"])

    def wait_for_span(self, trace_id: str, name: str, timeout_s: float = 30.0) -> list[Span]:
        """Poll until a span named `name` is stored in this trace; the trace's spans then."""
        found: list[Span] = []

        def arrived() -> bool:
            nonlocal found
            found = self.spans(trace_id)
            return any(span["name"] == name for span in found)

        if not poll(arrived, timeout_s):
            names = sorted({span["name"] for span in found})
            raise AssertionError(
                f"no {name!r} span in trace {trace_id} after {timeout_s:.0f} s; it has {names}"
            )
        return found


@contextlib.contextmanager
def trace_backend(ready_timeout_s: float = 120.0) -> Iterator[TraceBackend]:
    """Run Phoenix on free loopback ports, with its database in a temporary directory, until
    the block ends, once both its OTLP receivers listen. Fails, never skips, where it is not
    installed."""
    with phoenix_spec() as (spec, backend), server_processes(spec, ready_timeout_s=ready_timeout_s):
        backend.wait_for_grpc(ready_timeout_s)
        yield backend


@contextlib.contextmanager
def phoenix_spec() -> Iterator[tuple[ServerSpec, TraceBackend]]:
    """Phoenix's `ServerSpec` on free ports, and the backend it will be, for a caller that starts
    it beside other servers (`server_processes(spec, vllm)`: the ~25 s of Phoenix's start-up
    then overlap vLLM's minute). Its data directory is removed when the block ends."""
    executable = phoenix_executable()
    if not executable.exists():
        raise ServerFailed(f"{executable} is missing; `make install-trace-backend` installs it")
    http_port = free_port()
    grpc_port = _another_free_port(http_port)
    with tempfile.TemporaryDirectory(prefix="ttc-phoenix-") as data_dir:
        env = {
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(http_port),
            "PHOENIX_GRPC_PORT": str(grpc_port),
            "PHOENIX_WORKING_DIR": data_dir,
            # Set, so that none is inherited from the environment (a Postgres URL, say).
            "PHOENIX_SQL_DATABASE_URL": f"sqlite:///{data_dir}/phoenix.db",
            # Its migrations' SQL would fill the log's tail that a failure shows.
            "PHOENIX_LOG_MIGRATIONS": "false",
            # No web analytics, fonts or downloads: the tests reach only loopback.
            "PHOENIX_TELEMETRY_ENABLED": "false",
            "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        }
        spec = ServerSpec("phoenix", [str(executable), "serve"], http_port, env, "/healthz")
        yield spec, TraceBackend(spec.url, grpc_port)


def _another_free_port(taken: int) -> int:
    while (port := free_port()) == taken:
        time.sleep(0.01)
    return port


def _listens(port: int) -> Callable[[], bool]:
    def probe() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
        return False

    return probe


def _pages(client: httpx.Client, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Every item of a paged Phoenix listing, following `next_cursor`."""
    cursor: str | None = None
    while True:
        page_params = {**params, "limit": str(_PAGE), **({"cursor": cursor} if cursor else {})}
        response = client.get(path, params=page_params)
        response.raise_for_status()
        body = response.json()
        yield from body["data"]
        cursor = body.get("next_cursor")
        if not cursor:
            return


def _span(raw: dict[str, Any]) -> Span:
    return Span(
        name=raw["name"],
        trace_id=raw["context"]["trace_id"],
        span_id=raw["context"]["span_id"],
        parent_span_id=raw.get("parent_id"),
        attributes=raw.get("attributes", {}),
        start_time=datetime.fromisoformat(raw["start_time"]),
        end_time=datetime.fromisoformat(raw["end_time"]),
        status_code=raw["status_code"],
    )
