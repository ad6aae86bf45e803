"""The servers a run starts: the stand-in reading its script with this checkout's gateway in
front of it, or this checkout's gateway on the embedded SmolLM2."""

from __future__ import annotations

import json
import sys

from bench.accuracy.rows import Problem
from bench.processes import Services, free_port
from bench.stack import checkout_path
from bench.thinking.script import script

__all__ = ["STANDIN_MODEL", "start_embedded", "start_standin"]

STANDIN_MODEL = "standin-thinker"


def _gateway(services: Services, *flags: str) -> str:
    port = free_port()
    argv = [sys.executable, "-m", "server", *flags, "--port", str(port), "--log-level", "warning"]
    gateway = services.start("ttc", argv, f"http://127.0.0.1:{port}", env=checkout_path())
    # /ready answers once the model is loaded (the embedded one takes a few seconds).
    gateway.wait_ready("/ready", timeout_s=600)
    return gateway.url


def start_standin(services: Services, problems: list[Problem]) -> str:
    """The checking stand-in thinking from the problems' script, and the gateway's URL in front
    of it."""
    path = services.log_dir / "script.json"
    path.write_text(json.dumps(script(problems)))
    port = free_port()
    argv = [sys.executable, "-m", "bench.vllm_standin", "--frontend", "checking"]
    argv += ["--port", str(port), "--model", STANDIN_MODEL, "--script", str(path)]
    standin = services.start("standin", argv, f"http://127.0.0.1:{port}", env=checkout_path())
    standin.wait_ready("/v1/models", timeout_s=30)
    return _gateway(services, "--backend", "vllm", "--vllm-url", standin.url)


def start_embedded(services: Services) -> str:
    """This checkout's gateway on its default backend, the embedded SmolLM2; its URL."""
    return _gateway(services)
