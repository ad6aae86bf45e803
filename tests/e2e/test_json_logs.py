"""`--log-format json` on a real gateway process: every line it writes is one JSON object, and
the lines written while a request is served carry the id its response header does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from bench.processes import Service
from bench.vllm_standin.answers import SERVED_MODEL
from bench.vllm_standin.state import StandIn
from tests.factories import gateway_client
from tests.servers import gateway_service

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(standin: StandIn) -> Iterator[Service]:
    with gateway_service(
        "--backend",
        "vllm",
        "--vllm-url",
        standin.url,
        "--log-format",
        "json",
        "--access-log",
        "--log-level",
        "debug",
        ready_timeout_s=60,
    ) as service:
        yield service


def logged(gateway: Service) -> list[dict[str, Any]]:
    """Every line of the gateway's stdout and stderr, each parsed as one JSON object."""
    lines = gateway.log.read_text().splitlines()
    assert lines, "the gateway wrote nothing"
    parsed = []
    for line in lines:
        try:
            parsed.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    return parsed


def lines_of(gateway: Service, request_id: str, loggers: set[str]) -> list[dict[str, Any]]:
    """The request's lines once each of `loggers` wrote one (within a few seconds)."""
    deadline = time.monotonic() + 5
    while True:
        mine = [line for line in logged(gateway) if line.get("request_id") == request_id]
        if loggers <= {line["logger"] for line in mine} or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


async def test_the_lines_of_a_request_are_json_with_its_request_id(gateway: Service) -> None:
    async with gateway_client(gateway.url) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=SERVED_MODEL,
            messages=[{"role": "user", "content": "What is 2 + 3?"}],
            max_tokens=8,
            extra_body={"reasoning_strategy": "majority_vote", "reasoning_params": {"n": 2}},
        )
    request_id = raw.headers["x-request-id"]
    assert request_id

    # uvicorn's access line and the gateway's own summary line, both in the request's context.
    mine = lines_of(gateway, request_id, {"uvicorn.access", "server.serving.running"})
    by_logger = {line["logger"]: line for line in mine}
    access = by_logger["uvicorn.access"]
    assert "POST /v1/chat/completions" in access["message"]
    assert access["message"].endswith(" 200")
    assert access["level"] == "INFO"
    summary = by_logger["server.serving.running"]
    assert summary["level"] == "DEBUG"
    assert "strategy=majority_vote" in summary["message"]
    for line in mine:
        assert {"time", "level", "logger", "message", "request_id"} <= line.keys()
        assert line["time"].endswith("Z")


def test_lines_outside_requests_have_no_request_id(gateway: Service) -> None:
    lines = logged(gateway)
    started = [line for line in lines if line["message"] == "Application startup complete."]
    assert len(started) == 1
    assert started[0]["logger"] == "uvicorn.error"
    assert "request_id" not in started[0]
