"""One real gateway on the embedded SmolLM2 model, shared by the e2e tests of a session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from tests.servers import gateway_process

MODEL = "SmolLM2-135M-Instruct"
MAX_N = 8
MAX_TOKENS = 256


@pytest.fixture(scope="session")
def gateway_url() -> Iterator[str]:
    # Limits low enough that the limit errors can be provoked cheaply.
    with gateway_process(
        "--limits.max-n",
        str(MAX_N),
        "--limits.max-tokens",
        str(MAX_TOKENS),
        "--limits.default-max-tokens",
        "128",
    ) as url:
        yield url


@pytest.fixture
async def client(gateway_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0
    ) as c:
        yield c
