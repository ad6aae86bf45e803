"""API keys against a real redis-server, shared by two gateway processes on vLLM stand-ins:
one limit holds across both, a spent dollar budget is spent on both, a request cut off is
charged what it used, and a wrong key is the openai client's AuthenticationError."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import redis
from openai.types.chat import ChatCompletionMessageParam

from bench.vllm_standin.answers import PRM_MODEL, SERVED_MODEL
from bench.vllm_standin.state import StandIn
from tests.exposition import Samples
from tests.prometheus import (
    as_prometheus_sees_it,
    dashboard_queries,
    has_data,
    prometheus,
    query,
    wait_for_scrapes,
)
from tests.servers import gateway_process

pytestmark = pytest.mark.e2e

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is 3 + 4?"}]
# The stand-in answers "First add the numbers.\nAnswer: 7": five space-separated tokens.
ANSWER_TOKENS = 5
REQUEST_TIMEOUT_S = 3


@dataclass(frozen=True)
class Keys:
    """The keys of the module's key file, each with an alias of this run's own."""

    shared: tuple[str, str]
    broke: tuple[str, str]
    metered: tuple[str, str]
    reader: tuple[str, str]
    frugal: tuple[str, str]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Keys, Path]]:
    run = uuid.uuid4().hex[:8]

    def key(name: str) -> tuple[str, str]:
        return f"{name}-{run}", f"sk-{name}-{uuid.uuid4().hex}"

    chosen = Keys(
        shared=key("shared"),
        broke=key("broke"),
        metered=key("metered"),
        reader=key("reader"),
        frugal=key("frugal"),
    )
    entries = [
        {"alias": chosen.shared[0], "key": chosen.shared[1], "limits": {"rpm": 3}},
        # $1 per million tokens: $0.00005 is 50 tokens a day.
        {"alias": chosen.broke[0], "key": chosen.broke[1], "limits": {"usd_per_day": 0.00005}},
        {
            "alias": chosen.metered[0],
            "key": chosen.metered[1],
            "limits": {"tpm": 100_000, "max_in_flight": 4},
        },
        {"alias": chosen.reader[0], "key": chosen.reader[1], "limits": {"tpm": 2_000}},
        # $0.01 a day is 10,000 tokens, generated or read by the PRM.
        {"alias": chosen.frugal[0], "key": chosen.frugal[1], "limits": {"usd_per_day": 0.01}},
    ]
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    path.write_text(json.dumps(entries))
    yield chosen, path


@pytest.fixture(scope="module")
def gateways(
    keys: tuple[Keys, Path], standin: StandIn, redis_url: str
) -> Iterator[tuple[str, str]]:
    _, path = keys
    standin.slow_s = 0.2
    args = (
        "--backend",
        "vllm",
        "--vllm-url",
        standin.url,
        "--api-keys",
        str(path),
        "--redis-url",
        redis_url,
        "--prices",
        json.dumps({SERVED_MODEL: {"prompt": 1.0, "completion": 1.0, "verifier": 1.0}}),
        "--verifiers",
        json.dumps({"prm": {"kind": "vllm_prm", "url": standin.url, "model": PRM_MODEL}}),
        "--limits.request-timeout-s",
        str(REQUEST_TIMEOUT_S),
    )
    with gateway_process(*args) as first, gateway_process(*args) as second:
        yield first, second


@pytest.fixture
async def clients(
    gateways: tuple[str, str],
) -> AsyncIterator[tuple[openai.AsyncOpenAI, openai.AsyncOpenAI]]:
    def client(url: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unset", max_retries=0)

    async with client(gateways[0]) as first, client(gateways[1]) as second:
        yield first, second


def with_key(client: openai.AsyncOpenAI, key: tuple[str, str]) -> openai.AsyncOpenAI:
    return client.with_options(api_key=key[1])


def wait_for_a_fresh_minute(margin_s: float = 15.0) -> None:
    """Rates count per UTC minute: start where the minute will not roll over mid-test."""
    left = 60 - time.time() % 60
    if left < margin_s:
        time.sleep(left + 0.1)


async def test_a_wrong_or_missing_key_is_an_authentication_error(
    clients: tuple[openai.AsyncOpenAI, openai.AsyncOpenAI], gateways: tuple[str, str]
) -> None:
    with pytest.raises(openai.AuthenticationError) as raised:
        await clients[0].chat.completions.create(model=SERVED_MODEL, messages=QUESTION)
    assert raised.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        await clients[1].models.list()
    async with httpx.AsyncClient(base_url=gateways[0]) as plain:
        missing = await plain.get("/v1/models")
        health = await plain.get("/health")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    assert health.status_code == 200


async def test_two_gateways_enforce_one_rate_limit_together(
    clients: tuple[openai.AsyncOpenAI, openai.AsyncOpenAI], keys: tuple[Keys, Path]
) -> None:
    shared = keys[0].shared
    wait_for_a_fresh_minute()
    first, second = (with_key(c, shared) for c in clients)
    # rpm 3: requests alternate between the gateways; the fourth, on either, is refused.
    for client in (first, second, first):
        reply = await client.chat.completions.create(
            model=SERVED_MODEL, messages=QUESTION, max_tokens=8
        )
        assert reply.choices[0].message.content
    with pytest.raises(openai.RateLimitError) as raised:
        await second.chat.completions.create(model=SERVED_MODEL, messages=QUESTION, max_tokens=8)
    assert raised.value.code == "rate_limit_exceeded"
    assert 1 <= int(raised.value.response.headers["retry-after"]) <= 60
    with pytest.raises(openai.RateLimitError):
        await first.chat.completions.create(model=SERVED_MODEL, messages=QUESTION, max_tokens=8)


async def test_a_dollar_budget_spent_on_one_gateway_is_spent_on_both(
    clients: tuple[openai.AsyncOpenAI, openai.AsyncOpenAI],
    keys: tuple[Keys, Path],
    gateways: tuple[str, str],
) -> None:
    broke = keys[0].broke
    first, second = (with_key(c, broke) for c in clients)
    answered = 0
    with pytest.raises(openai.RateLimitError) as raised:
        for _ in range(10):
            await first.chat.completions.create(model=SERVED_MODEL, messages=QUESTION, max_tokens=8)
            answered += 1
    assert raised.value.code == "insufficient_quota"
    assert raised.value.response.headers["x-should-retry"] == "false"
    # 50 tokens a day, a request of 5 answer tokens and ~9 prompt tokens: a few, never ten.
    assert 1 <= answered < 10
    with pytest.raises(openai.RateLimitError) as on_the_other:
        await second.chat.completions.create(model=SERVED_MODEL, messages=QUESTION, max_tokens=8)
    assert on_the_other.value.code == "insufficient_quota"
    async with httpx.AsyncClient() as plain:
        scrape = Samples.parse((await plain.get(f"{gateways[0]}/metrics")).text)
    spent = scrape.get("ttc_key_cost_dollars_total", key=broke[0])
    assert 0 < spent <= 0.00005


async def test_a_request_cut_off_is_charged_what_it_used(
    clients: tuple[openai.AsyncOpenAI, openai.AsyncOpenAI],
    keys: tuple[Keys, Path],
    gateways: tuple[str, str],
    redis_url: str,
) -> None:
    metered = keys[0].metered
    client = with_key(clients[0], metered)
    # 64 candidates drawn one at a time, each taking the stand-in 0.2 s: the deadline cuts the
    # vote off after some of them. It reserved 64 x 16 tokens.
    with pytest.raises(openai.APIStatusError) as raised:
        await client.chat.completions.create(
            model=SERVED_MODEL,
            messages=[{"role": "user", "content": "SLOW: what is 3 + 4?"}],
            max_tokens=16,
            extra_body={
                "reasoning_strategy": "majority_vote",
                "reasoning_params": {
                    "n": 64,
                    "early_stop": {"method": "beta", "min_samples": 64, "wave": 1},
                },
            },
        )
    assert raised.value.status_code == 504
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        in_flight = f"ttc:key:{{{metered[0]}}}:in_flight"
        deadline = time.monotonic() + 30
        # Settled once its place in flight is freed.
        while store.zcard(in_flight) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.zcard(in_flight) == 0
        charged = sum(int(store.get(k) or 0) for k in store.keys(f"ttc:key:{{{metered[0]}}}:tpm:*"))
    finally:
        store.close()
    async with httpx.AsyncClient() as plain:
        scrape = Samples.parse((await plain.get(f"{gateways[0]}/metrics")).text)
    counted = scrape.get("ttc_generated_tokens_total", strategy="majority_vote")
    assert charged == scrape.get("ttc_key_tokens_total", key=metered[0])
    # Some candidates were drawn, each of five tokens, far fewer than the 64 reserved; and the
    # call the deadline cut off (unless it struck between two calls) is charged the most it
    # could have generated, 16 tokens.
    assert 0 < counted < 64 * 16 and counted % ANSWER_TOKENS == 0
    assert charged - counted in (0, 16)


# A question the PRM reads again with every partial solution it scores: 600 words, which the
# stand-in counts as 600 tokens and the gateway estimates at 3 characters a token.
LONG_QUESTION = "Think about the numbers. " * 150 + "What is 3 + 4?"
# A shorter one, which a $0.01 budget affords a few searches over.
MIDDLING_QUESTION = "Think about the numbers. " * 40 + "What is 3 + 4?"
BEAMS = {"n": 4, "beam_width": 2, "verifier": "prm", "step_separator": "\n"}


async def test_what_the_prm_reads_is_reserved_and_never_passed(
    clients: tuple[openai.AsyncOpenAI, openai.AsyncOpenAI],
    keys: tuple[Keys, Path],
    gateways: tuple[str, str],
    redis_url: str,
) -> None:
    reader = keys[0].reader
    client = with_key(clients[0], reader)
    wait_for_a_fresh_minute()
    # The PRM reads the long question with each of 4 beams at every step: far more than the
    # 2,000 tokens a minute the key has. It was admitted on a reservation of 128 and charged
    # over 10,000; now the reservation counts the reading, and it is refused before it runs.
    with pytest.raises(openai.RateLimitError) as raised:
        await client.chat.completions.create(
            model=SERVED_MODEL,
            messages=[{"role": "user", "content": LONG_QUESTION}],
            extra_body={
                "reasoning_strategy": "beam_search",
                "reasoning_params": {**BEAMS, "max_search_tokens": 64},
            },
        )
    assert raised.value.code == "rate_limit_exceeded"
    assert "tokens per minute" in raised.value.message
    # A short question fits: it is charged what it generated and the PRM read, within what
    # it reserved, 64 generated and 4 x (64 + 4 x 5) read.
    reply = await client.chat.completions.create(
        model=SERVED_MODEL,
        messages=QUESTION,
        extra_body={
            "reasoning_strategy": "beam_search",
            "reasoning_params": {**BEAMS, "max_search_tokens": 64},
        },
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None
    read = reply.usage.model_dump()["verifier_tokens"]
    assert read > 0
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        charged = sum(int(store.get(k) or 0) for k in store.keys(f"ttc:key:{{{reader[0]}}}:tpm:*"))
    finally:
        store.close()
    assert charged == reply.usage.completion_tokens + read
    assert charged <= 64 + 4 * (64 + 4 * 5)


async def test_a_shared_dollar_budget_bounds_what_the_prm_reads(
    clients: tuple[openai.AsyncOpenAI, openai.AsyncOpenAI],
    keys: tuple[Keys, Path],
    gateways: tuple[str, str],
) -> None:
    frugal = keys[0].frugal
    first, second = (with_key(c, frugal) for c in clients)
    # Searches alternately on the two gateways until the $0.01 a day is spent: each reserved
    # $0.0005 while the reading was left out, and read three times as much, so the last one
    # admitted took the key past its budget. Now each reserves its reading ($0.006), and the
    # searches stop being admitted while the budget still covers what they may spend.
    answered = 0
    with pytest.raises(openai.RateLimitError) as raised:
        for client in (first, second) * 5:
            await client.chat.completions.create(
                model=SERVED_MODEL,
                messages=[{"role": "user", "content": MIDDLING_QUESTION}],
                extra_body={
                    "reasoning_strategy": "beam_search",
                    "reasoning_params": {**BEAMS, "max_search_tokens": 64},
                },
            )
            answered += 1
    assert raised.value.code == "insufficient_quota"
    assert answered >= 1
    spent = 0.0
    async with httpx.AsyncClient() as plain:
        for url in gateways:
            scrape = Samples.parse((await plain.get(f"{url}/metrics")).text)
            spent += scrape.get("ttc_key_cost_dollars_total", key=frugal[0])
    assert 0 < spent <= 0.01


def test_every_tenants_panel_returns_data(gateways: tuple[str, str]) -> None:
    # After the tests above: both gateways have served, refused and charged keys.
    targets = {"ttc-gateway": [url.removeprefix("http://") for url in gateways]}
    with prometheus(targets) as url:
        wait_for_scrapes(url, "ttc-gateway")
        queries = dashboard_queries("keys")
        empty = [
            f"{title}: {expr}"
            for title, expr in queries
            if not has_data(query(url, as_prometheus_sees_it(expr)))
        ]
    assert queries and empty == [], "no data for:\n" + "\n".join(empty)
