"""The system under test for `bench.gateway` and `bench.faults`: the vLLM stand-in and this
checkout's gateway in front of it, started as child processes.

- `start_stub` starts the stand-in (`python -m bench.vllm_standin`) with either of its front
  ends (`STUB_FRONTENDS`); `Stub` reads and resets its call counters.
- `start_ttc` starts this checkout's gateway (`python -m server`) in front of it.

Nothing here imports the project: the benchmarks talk to it over HTTP only.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.processes import Service, Services, free_port

__all__ = [
    "QUESTION",
    "ROOT",
    "STUB_FRONTENDS",
    "STUB_MODEL",
    "Stub",
    "checkout_path",
    "get_json",
    "post_json",
    "start_stub",
    "start_ttc",
    "ttc_body",
]

ROOT = Path(__file__).resolve().parent.parent
STUB_MODEL = "stub-model"
QUESTION = "What is 2 + 2? Answer with a number."
# bench.vllm_standin's --frontend: `raw` is the ceiling, `fastapi` costs what vLLM's server does.
STUB_FRONTENDS = ("raw", "fastapi")


@dataclass
class Stub:
    """The running stand-in, and its call counters (`/stats`)."""

    service: Service
    frontend: str = "raw"

    @property
    def url(self) -> str:
        return self.service.url

    def stats(self) -> dict[str, Any]:
        return get_json(self.url + "/stats")

    def reset(self) -> None:
        post_json(self.url + "/stats/reset", {})


def start_stub(
    services: Services,
    latency_ms: float = 0.0,
    fail_503: float = 0.0,
    retry_after: bool = False,
    name: str = "stub",
    frontend: str = "raw",
) -> Stub:
    if frontend not in STUB_FRONTENDS:
        raise ValueError(f"stub front end {frontend!r} is not one of {STUB_FRONTENDS}")
    port = free_port()
    argv = [sys.executable, "-m", "bench.vllm_standin", "--port", str(port)]
    argv += ["--frontend", frontend]
    argv += ["--latency-ms", str(latency_ms), "--fail-503", str(fail_503)]
    if retry_after:
        argv.append("--retry-after")
    service = services.start(name, argv, f"http://127.0.0.1:{port}", env=checkout_path())
    service.wait_ready("/v1/models", timeout_s=20)
    return Stub(service, frontend)


def start_ttc(
    services: Services,
    stub: Stub,
    extra_args: str = "",
    name: str = "ttc",
    env: Mapping[str, str] | None = None,
) -> Service:
    """This checkout's gateway (`python -m server` with the checkout first on the path), with
    `env` over the environment."""
    port = free_port()
    argv = [sys.executable, "-m", "server", "--backend", "vllm", "--vllm-url", stub.url]
    argv += ["--model", STUB_MODEL, "--port", str(port), "--log-level", "warning"]
    argv += shlex.split(extra_args)
    service = services.start(
        name, argv, f"http://127.0.0.1:{port}", {**checkout_path(), **(env or {})}
    )
    service.wait_ready("/v1/models", timeout_s=60)
    return service


def checkout_path(root: Path = ROOT) -> dict[str, str]:
    """The environment a child needs to import this checkout's packages from any directory."""
    return {
        "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    }


def ttc_body(n: int, max_tokens: int) -> dict[str, Any]:
    return {
        "model": STUB_MODEL,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": max_tokens,
        "reasoning_strategy": "majority_vote",
        "reasoning_params": {"n": n},
    }


def get_json(url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def post_json(url: str, body: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data
