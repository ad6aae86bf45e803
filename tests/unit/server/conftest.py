"""Fixtures shared by the server's tool tests (chat completions and Responses)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from backends.scripted import ScriptedBackend
from tests.factories import sdk_client, tool_call_text


@pytest.fixture
def backend() -> ScriptedBackend:
    """A scripted backend that calls get_weather for Paris."""
    return ScriptedBackend([tool_call_text("get_weather", {"city": "Paris"})])


@pytest.fixture
async def client(backend: ScriptedBackend) -> AsyncIterator[openai.AsyncOpenAI]:
    """The openai SDK wired to an app around `backend`."""
    async with sdk_client(backend) as sdk:
        yield sdk
