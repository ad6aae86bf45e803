"""The systems `bench.gateway` drives, each in front of the same stand-in: the stand-in called
directly, this checkout's gateway, and its peers from PyPI (its_hub, optillm), which go into
virtual environments of their own under the user's cache directory, made on first use and never
in CI."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.processes import Service, ServiceError, Services, free_port
from bench.stack import QUESTION, STUB_MODEL, Stub, checkout_path, post_json, start_ttc, ttc_body

__all__ = [
    "PEERS",
    "STARTERS",
    "SYSTEMS",
    "Peer",
    "Target",
    "chat_body",
    "default_venvs",
    "ensure_peer",
    "its_hub_configuration",
    "start_direct",
    "start_its_hub",
    "start_optillm",
    "start_ttc_target",
    "start_ttc_traced",
]

# `ttc_traced` is the gateway tracing every request, exporting to a sink (bench/otlp_sink.py).
SYSTEMS = ("direct", "ttc", "ttc_traced", "its_hub", "optillm")
# What `direct`, hence "× direct", stands for with each of the stub's front ends.


@dataclass(frozen=True)
class Peer:
    """A peer gateway from PyPI, pinned, in a virtual environment of its own."""

    name: str
    requirement: str

    def python(self, venvs: Path) -> Path:
        return venvs / self.name / "bin" / "python"


PEERS = {
    "its_hub": Peer("its_hub", "its-hub[iaas]==1.2.0"),
    "optillm": Peer("optillm", "optillm==0.4.0"),
}


def default_venvs() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ttc-server-bench" / "venvs"


def ensure_peer(peer: Peer, venvs: Path) -> Path:
    """The peer's interpreter, installing it first if its environment is missing or stale."""
    venv = venvs / peer.name
    marker = venv / ".ttc-bench-requirement"
    python = peer.python(venvs)
    if python.exists() and marker.exists() and marker.read_text() == peer.requirement:
        return python
    if os.environ.get("CI"):
        raise ServiceError(f"{peer.name}: not installed, and peers are never installed in CI")
    print(f"installing {peer.requirement} into {venv} (first use; this takes minutes)", flush=True)
    venvs.mkdir(parents=True, exist_ok=True)
    # The base interpreter, not this virtual environment's, so the peer shares none of our packages.
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
    install = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*install, peer.requirement], check=True)
    marker.write_text(peer.requirement)
    return python


@dataclass
class Target:
    """One system ready to be driven: where to POST what, and whose CPU it costs."""

    system: str
    url: str
    body: dict[str, Any]
    # The gateway process whose CPU is charged; None for the stub called directly.
    service: Service | None


def chat_body(max_tokens: int, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": QUESTION}]
    return {"model": STUB_MODEL, "messages": messages, "max_tokens": max_tokens, **extra}


def start_direct(services: Services, stub: Stub, args: argparse.Namespace) -> Target:
    body = chat_body(args.max_tokens, n=args.n, return_token_ids=True)
    return Target("direct", stub.url + "/v1/chat/completions", body, None)


def start_ttc_target(services: Services, stub: Stub, args: argparse.Namespace) -> Target:
    service = start_ttc(services, stub, args.ttc_args)
    body = ttc_body(args.n, args.max_tokens)
    return Target("ttc", service.url + "/v1/chat/completions", body, service)


def start_ttc_traced(services: Services, stub: Stub, args: argparse.Namespace) -> Target:
    port = free_port()
    sink = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "bench.otlp_sink", "--port", str(port)]
    services.start("otlp_sink", argv, sink, env=checkout_path()).wait_ready("/health", 30)
    extra = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink, "OTEL_BSP_MAX_QUEUE_SIZE": "65536"}
    service = start_ttc(services, stub, args.ttc_args, name="ttc_traced", env=extra)
    body = ttc_body(args.n, args.max_tokens)
    return Target("ttc_traced", service.url + "/v1/chat/completions", body, service)


def start_its_hub(services: Services, stub: Stub, args: argparse.Namespace) -> Target:
    python = ensure_peer(PEERS["its_hub"], args.venvs)
    port = free_port()
    # `its-iaas` is this module's console script; -m keeps the environment relocatable.
    argv = [str(python), "-m", "its_hub.integration.iaas.app_server"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
    service = services.start("its_hub", argv, f"http://127.0.0.1:{port}")
    service.wait_ready("/v1/models", timeout_s=60)
    # It serves nothing until told its backend and algorithm; self-consistency needs a regex
    # that projects an answer onto what is voted on.
    configuration = its_hub_configuration(stub.url, args.n)
    post_json(service.url + "/configure", configuration)
    return Target(
        "its_hub", service.url + "/v1/chat/completions", chat_body(args.max_tokens), service
    )


def its_hub_configuration(stub_url: str, n: int) -> dict[str, Any]:
    return {
        "provider": "openai",
        "endpoint": stub_url + "/v1",
        "api_key": "bench",
        "model": STUB_MODEL,
        "alg": "self-consistency",
        "regex_patterns": [r"The answer is (\d+)"],
        "budget": n,
    }


def start_optillm(services: Services, stub: Stub, args: argparse.Namespace) -> Target:
    python = ensure_peer(PEERS["optillm"], args.venvs)
    port = free_port()
    # The package has no __main__; this is what its `optillm` console script runs.
    argv = [str(python), "-c", "import sys, optillm; sys.exit(optillm.main())"]
    argv += ["--approach", "majority_voting"]
    argv += ["--base-url", stub.url + "/v1", "--port", str(port), "--host", "127.0.0.1"]
    argv += ["--log", "warning"]
    env = {"OPENAI_API_KEY": "bench", "OPTILLM_API_KEY": ""}
    service = services.start("optillm", argv, f"http://127.0.0.1:{port}", env=env)
    service.wait_ready("/v1/models", timeout_s=120)
    # Its majority_voting plugin samples `k` (one call with n=k); a request's `n` would run the
    # whole vote n times over, one after another.
    body = chat_body(args.max_tokens, k=args.n)
    return Target("optillm", service.url + "/v1/chat/completions", body, service)


STARTERS: dict[str, Callable[[Services, Stub, argparse.Namespace], Target]] = {
    "direct": start_direct,
    "ttc": start_ttc_target,
    "ttc_traced": start_ttc_traced,
    "its_hub": start_its_hub,
    "optillm": start_optillm,
}
