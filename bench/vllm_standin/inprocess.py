"""The checking stand-in served in a thread of this process, as the tests use it."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator

import uvicorn

from bench.processes import free_port
from bench.vllm_standin.answers import SERVED_MODEL
from bench.vllm_standin.checking import create_checking_app
from bench.vllm_standin.state import Options, StandIn

__all__ = ["run_standin"]


@contextlib.contextmanager
def run_standin(model: str = SERVED_MODEL, options: Options | None = None) -> Iterator[StandIn]:
    """Serve a checking stand-in of `model` on a loopback port, in a thread of this process,
    until the block ends."""
    port = free_port()
    options = dataclasses.replace(options or Options(), model=model)
    state = StandIn(options, url=f"http://127.0.0.1:{port}")
    app = create_checking_app(state)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the vLLM stand-in did not start")
        time.sleep(0.05)
    try:
        yield state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
