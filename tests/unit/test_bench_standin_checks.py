"""The stand-in's request checks (`bench.vllm_standin.checks`) and its front end's `/health`,
as a router in front of it sees them."""

from __future__ import annotations

import httpx
import pytest

from bench.vllm_standin.answers import SERVED_MODEL
from bench.vllm_standin.checking import create_checking_app
from bench.vllm_standin.checks import Violation, check_chat, check_completion
from bench.vllm_standin.state import StandIn

CHAT = {
    "model": SERVED_MODEL,
    "messages": [{"role": "user", "content": "2+2?"}],
    "n": 1,
    "max_tokens": 5,
    "return_token_ids": True,
}
COMPLETION = {"model": SERVED_MODEL, "prompt": "2+2=", "n": 1, "max_tokens": 5}
ADDED = {"no_stop_trim": False, "separate_reasoning": True}


def test_fields_a_router_adds_are_let_through_only_when_named() -> None:
    ignored = frozenset(ADDED)
    assert check_chat(CHAT | ADDED, SERVED_MODEL, ignored) == CHAT["messages"]
    completion = COMPLETION | {"return_token_ids": True} | ADDED
    assert check_completion(completion, SERVED_MODEL, ignored) == "2+2="
    with pytest.raises(Violation, match="unexpected fields"):
        check_chat(CHAT | ADDED, SERVED_MODEL)
    # Naming some does not let others through.
    with pytest.raises(Violation, match="unexpected fields"):
        check_chat(CHAT | ADDED | {"other": 1}, SERVED_MODEL, ignored)


async def test_health_answers_200_as_vllm_does() -> None:
    app = create_checking_app(StandIn())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://standin") as client:
        response = await client.get("/health")
    assert response.status_code == 200 and response.content == b""
