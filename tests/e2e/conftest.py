"""One real gateway on the embedded SmolLM2 model, shared by the e2e tests of a session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from bench.vllm_standin.state import StandIn
from tests.factories import gateway_client
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
    async with gateway_client(gateway_url) as c:
        yield c


@pytest.fixture(scope="module")
def standin_gateway(standin: StandIn) -> Iterator[str]:
    """A gateway of the module's own in front of its vLLM stand-in."""
    with gateway_process("--backend", "vllm", "--vllm-url", standin.url) as url:
        yield url
