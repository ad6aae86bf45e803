"""A real gateway process stops gracefully on SIGTERM: not ready at once, the request in flight
answered, then exit 0. The vLLM stand-in holds a prompt with SLOW, so the request is in flight."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bench.vllm_standin.answers import SERVED_MODEL
from bench.vllm_standin.inprocess import run_standin
from tests.servers import gateway_server

pytestmark = pytest.mark.e2e


def chat(content: str) -> dict[str, object]:
    return {"model": SERVED_MODEL, "messages": [{"role": "user", "content": content}]}


def test_sigterm_fails_ready_lets_the_request_in_flight_finish_and_exits_0() -> None:
    with run_standin() as standin:
        standin.slow_s = 4
        args = ("--backend", "vllm", "--vllm-url", standin.url, "--shutdown-delay-s", "2")
        with gateway_server(*args, ready_timeout_s=60) as (url, process):
            with ThreadPoolExecutor(1) as pool:
                slow = pool.submit(
                    httpx.post, f"{url}/v1/chat/completions", json=chat("SLOW 3 + 4?"), timeout=60
                )
                deadline = time.monotonic() + 30
                while "/v1/chat/completions" not in standin.paths():
                    assert time.monotonic() < deadline, "the request never reached the stand-in"
                    time.sleep(0.02)

                process.send_signal(signal.SIGTERM)
                # Not ready within a tick, while the delay keeps the server answering.
                ready = httpx.get(f"{url}/ready", timeout=10)
                while ready.status_code == 200 and time.monotonic() < deadline:
                    time.sleep(0.02)
                    ready = httpx.get(f"{url}/ready", timeout=10)
                assert ready.status_code == 503
                assert ready.json()["error"]["code"] == "shutting_down"
                assert ready.headers["retry-after"] == "1"

                response = slow.result(timeout=60)
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"]
            assert process.wait(timeout=30) == 0
