"""Fixtures shared by the unit and e2e suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import redis_server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server of the session's own, started on first use."""
    with redis_server() as url:
        yield url
