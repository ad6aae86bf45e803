"""Fixtures shared by the unit and e2e suites."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from bench.vllm_standin.inprocess import run_standin
from bench.vllm_standin.state import StandIn
from tests.loopback import Loopback, loopback
from tests.servers import redis_server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server of the session's own, started on first use."""
    with redis_server() as url:
        yield url


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    """A checking vLLM stand-in of the module's own, in a thread of this process."""
    with run_standin() as server:
        yield server


@pytest.fixture
def fresh(standin: StandIn) -> Iterator[StandIn]:
    """The stand-in with no requests recorded yet; it must have seen no bad one at the end."""
    standin.requests.clear()
    yield standin
    assert standin.violations == []


@pytest.fixture
async def servers() -> AsyncIterator[Loopback]:
    """Loopback servers and clients for one test (tests/loopback.py)."""
    async with loopback() as running:
        yield running
