"""Real server processes for tests: a clear failure with the log tail, never a hang."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.factories import free_port


class ServerFailed(RuntimeError):
    """A server process exited or never became ready."""


@contextlib.contextmanager
def gateway_process(*args: str, ready_timeout_s: float = 600.0) -> Iterator[str]:
    """Run `ttc-server` on a free loopback port until the block ends; yields its base URL."""
    port = free_port()
    with tempfile.NamedTemporaryFile(
        "w+", prefix="ttc-server-", suffix=".log", delete=False
    ) as log:
        log_path = Path(log.name)
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log_path, ready_timeout_s)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_path.unlink(missing_ok=True)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Poll `/health` until it answers; fail fast with the log's tail if the process dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(f"server exited with {process.returncode}:\n{tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise ServerFailed(f"server not ready after {timeout_s:.0f} s:\n{tail(log)}")


def tail(log: Path, lines: int = 40) -> str:
    """The last lines of a log file."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
