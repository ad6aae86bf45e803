"""The gateway behind real routers, each in front of two vLLM stand-ins (`deploy/router.md`).

vllm-router (the vLLM project's, `--policy consistent_hash`) and SGLang's model gateway (`smg`,
`--policy consistent_hashing`) run as the processes `make install-test` installs, with the
flags deploy/router.md gives; the gateway knows only the router's URL and its routing header.
Searches (beam search judged by llm_judge on the gateway's backend, so the judge's calls go
through the router too) and votes are sent; what the stand-ins recorded then shows that every
call of a request reached one engine and that the requests spread over both.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletionMessageParam

from bench.vllm_standin.answers import SERVED_MODEL
from bench.vllm_standin.inprocess import run_standin
from bench.vllm_standin.state import Options, StandIn
from tests.factories import free_port, gateway_client
from tests.servers import ServerSpec, gateway_process, server_processes

pytestmark = pytest.mark.e2e

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is 3 + 4?"}]
# Four steps to a solution, so a beam search makes several calls, each continuing the last.
STEPS = "First add the numbers.\nThree and four make seven.\nCheck: 7 - 4 = 3.\nAnswer: 7"
BEAMS = {"n": 4, "beam_width": 2, "verifier": "llm_judge", "step_separator": "\n"}
SEARCHES = 8
VOTES = 8
GENERATION = ("/v1/chat/completions", "/v1/completions")
# The fields vllm-router (forked from SGLang's router) adds to every generation body it
# forwards; vLLM ignores them, as it ignores any field it does not know, and logs them.
VLLM_ROUTER_FIELDS = frozenset(
    {"include_reasoning", "no_stop_trim", "return_hidden_states", "separate_reasoning"}
    | {"stream_reasoning"}
)


def _script(name: str) -> str:
    """A console script installed beside this Python (the test extra's routers)."""
    return str(Path(sys.executable).with_name(name))


@dataclass(frozen=True)
class Router:
    """A router to test: how to start it before two workers, and the header it routes on."""

    name: str
    command: Callable[[int, Sequence[str]], list[str]]
    routing_header: str
    adds_fields: frozenset[str] = frozenset()


def vllm_router(port: int, workers: Sequence[str]) -> list[str]:
    # Its metrics listener defaults to port 29000, which parallel runs would share.
    return [
        *(_script("vllm-router"), "--host", "127.0.0.1", "--port", str(port)),
        *("--worker-urls", *workers, "--policy", "consistent_hash"),
        *("--prometheus-port", str(free_port()), "--log-level", "warning"),
    ]


def smg(port: int, workers: Sequence[str]) -> list[str]:
    return [
        *(_script("smg"), "launch", "--host", "127.0.0.1", "--port", str(port)),
        *("--worker-urls", *workers, "--policy", "consistent_hashing"),
        *("--prometheus-port", str(free_port()), "--log-level", "warn"),
        # It keeps listening 5 s after SIGTERM for load balancers to notice, unless told less.
        *("--shutdown-grace-period-secs", "1"),
    ]


ROUTERS = [
    Router("vllm-router", vllm_router, "X-Session-ID", VLLM_ROUTER_FIELDS),
    Router("smg", smg, "X-SMG-Routing-Key"),
]


@dataclass(frozen=True)
class Deployment:
    """A gateway in front of a router in front of two stand-ins."""

    router: Router
    gateway: str
    workers: tuple[StandIn, StandIn]


@pytest.fixture(scope="module", params=ROUTERS, ids=lambda router: router.name)
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    router: Router = request.param
    options = Options(answers=(STEPS,), ignored=router.adds_fields)
    with run_standin(options=options) as first, run_standin(options=options) as second:
        port = free_port()
        spec = ServerSpec(router.name, router.command(port, [first.url, second.url]), port)
        with (
            server_processes(spec, ready_timeout_s=60),
            gateway_process(
                *("--backend", "vllm", "--vllm-url", spec.url),
                *("--vllm.routing-header", router.routing_header),
                ready_timeout_s=60,
            ) as gateway,
        ):
            yield Deployment(router, gateway, (first, second))


async def test_every_call_of_a_request_lands_on_one_engine(deployment: Deployment) -> None:
    workers = deployment.workers
    for worker in workers:
        worker.requests.clear()
    async with gateway_client(deployment.gateway) as client:

        async def ask(strategy: str, params: dict[str, object], request_id: str) -> None:
            response = await client.chat.completions.create(
                model=SERVED_MODEL,
                messages=QUESTION,
                max_tokens=64,
                extra_body={"reasoning_strategy": strategy, "reasoning_params": params},
                extra_headers={"X-Request-Id": request_id},
            )
            assert response.choices[0].message.content

        # Every request reuses one client id: the routing key is the server's, not this.
        await asyncio.gather(
            *(ask("beam_search", BEAMS, "same-client-id") for _ in range(SEARCHES)),
            *(ask("majority_vote", {"n": 3}, "same-client-id") for _ in range(VOTES)),
        )
    header = deployment.router.routing_header.lower()
    engines_of: dict[str, set[int]] = {}
    calls_of: dict[str, int] = {}
    for index, worker in enumerate(workers):
        assert worker.violations == []
        for call in worker.requests:
            assert call.path in GENERATION
            key = call.headers[header]
            engines_of.setdefault(key, set()).add(index)
            calls_of[key] = calls_of.get(key, 0) + 1
    # One key per request, each request's calls (a search's steps and judgements) on one
    # engine, and the requests spread over both engines.
    assert len(engines_of) == SEARCHES + VOTES
    assert all(len(engines) == 1 for engines in engines_of.values()), engines_of
    counts = sorted(calls_of.values())
    assert counts[:VOTES] == [1] * VOTES and min(counts[VOTES:]) >= 4, counts
    assert set().union(*engines_of.values()) == {0, 1}
