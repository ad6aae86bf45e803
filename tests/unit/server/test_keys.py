"""API keys and their limits through the HTTP surface, on the scripted backend: 401s, 429s and
their precedence under the server's 400s, settlement at what a request spent, and a store that
cannot be reached."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from starlette.types import Message

from backends.scripted import ScriptedBackend
from server.app import create_app
from server.keys import ApiKey, KeyLimits, KeyRing
from server.limit_store import MemoryLimitStore
from server.metrics import Metrics
from server.quota import Estimate, Quotas
from server.settings import LimitsSettings, Settings
from strategies.accounting import ModelPrice, Usage
from tests.exposition import Samples
from tests.factories import SCRIPTED_MODEL, app_client, chat_body, free_port, http_scope, sse_events

KEY = "sk-test-alpha"


def key_file(tmp_path: Path, *entries: dict[str, Any]) -> str:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(list(entries)))
    return str(path)


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def settings(tmp_path: Path, key_limits: dict[str, Any] | None = None, **more: Any) -> Settings:
    keys = key_file(tmp_path, {"alias": "alpha", "key": KEY, "limits": key_limits or {}})
    return Settings(api_keys=SecretStr(keys), **more)


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# The key file


def test_a_key_file_in_yaml_with_a_hashed_key(tmp_path: Path) -> None:
    hashed = hashlib.sha256(b"sk-hidden").hexdigest()
    path = tmp_path / "keys.yaml"
    path.write_text(f"- alias: team-a\n  key: sha256:{hashed}\n  limits: {{rpm: 5}}\n")
    ring = KeyRing.load(str(path))
    found = ring.find("sk-hidden")
    assert found is not None and found.alias == "team-a" and found.limits.rpm == 5
    assert ring.find(f"sha256:{hashed}") is None  # the digest is not itself a key


def test_keys_holding_a_slash_are_keys_never_a_path_echoed_back() -> None:
    # Base64 keys hold `/`: read as a path, they were echoed in the start-up error.
    ring = KeyRing.load("sk-a/b+c, sk-d/e")
    assert ring.aliases == ("key-1", "key-2")
    assert ring.find("sk-a/b+c") is not None
    single = KeyRing.load("sk-only/one")
    assert single.find("sk-only/one") is not None


def test_a_missing_key_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the key file"):
        KeyRing.load(str(tmp_path / "keys"))


def test_comma_separated_keys_are_aliased_by_position() -> None:
    ring = KeyRing.load("sk-one, sk-two")
    assert ring.aliases == ("key-1", "key-2")
    found = ring.find("sk-two")
    assert found is not None and found.alias == "key-2"
    assert ring.find("sk-three") is None


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"alias": "a", "key": "sk-1"}, {"alias": "a", "key": "sk-2"}], "given twice"),
        ([{"alias": "a", "key": "sk-1"}, {"alias": "b", "key": "sk-1"}], "key of 'b'"),
        ([{"alias": "a b", "key": "sk-1"}], "alias"),
        ([{"alias": "a", "key": "sk-secret-1", "limits": {"rpm": 0}}], "limits.rpm"),
        ([], "no keys"),
    ],
)
def test_a_bad_key_file_stops_the_server_without_showing_keys(
    tmp_path: Path, entries: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        Settings(api_keys=SecretStr(key_file(tmp_path, *entries)))
    assert "sk-" not in str(raised.value)


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the key file"):
        Settings(api_keys=SecretStr(str(tmp_path / "absent.yaml")))


# Who may call


async def test_missing_and_wrong_keys_are_401_and_the_right_one_passes(tmp_path: Path) -> None:
    async with app_client(ScriptedBackend(), settings=settings(tmp_path)) as client:
        missing = await client.post("/v1/chat/completions", json=chat_body())
        wrong = await client.post("/v1/chat/completions", json=chat_body(), headers=auth("sk-x"))
        basic = await client.get("/v1/models", headers={"Authorization": f"Basic {KEY}"})
        right = await client.post("/v1/chat/completions", json=chat_body(), headers=auth())
        models = await client.get("/v1/models", headers=auth())
        tokenize = await client.post("/tokenize", json={"prompt": "a b"})
        health, ready = await client.get("/health"), await client.get("/ready")
        scrape = Samples.parse((await client.get("/metrics")).text)
    for response in (missing, wrong, basic, tokenize):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        error = error_of(response)
        assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
        assert "sk-x" not in error["message"] and KEY not in error["message"]
    assert "didn't provide" in error_of(missing)["message"]
    assert right.status_code == 200 and models.status_code == 200
    assert (health.status_code, ready.status_code) == (200, 200)
    assert scrape.get("ttc_unauthorized_requests_total") == 4
    assert scrape.get("ttc_key_requests_total", key="alpha") == 1


async def test_metrics_token(tmp_path: Path) -> None:
    chosen = Settings(metrics_token=SecretStr("scrape-me"))
    async with app_client(ScriptedBackend(), settings=chosen) as client:
        without = await client.get("/metrics")
        wrong = await client.get("/metrics", headers=auth("nope"))
        right = await client.get("/metrics", headers=auth("scrape-me"))
        # No --api-keys: the API stays open.
        api = await client.post("/v1/chat/completions", json=chat_body())
    assert (without.status_code, wrong.status_code) == (401, 401)
    assert right.status_code == 200 and "ttc_requests_total" in right.text
    assert api.status_code == 200


# Limits


async def test_requests_per_minute_then_429_with_retry_after(tmp_path: Path) -> None:
    async with app_client(ScriptedBackend(), settings=settings(tmp_path, {"rpm": 2})) as client:
        codes = [
            (await client.post("/v1/chat/completions", json=chat_body(), headers=auth()))
            for _ in range(3)
        ]
        scrape = Samples.parse((await client.get("/metrics")).text)
    assert [r.status_code for r in codes] == [200, 200, 429]
    error = error_of(codes[2])
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert 1 <= int(codes[2].headers["retry-after"]) <= 60
    assert scrape.get("ttc_key_rejected_requests_total", key="alpha", reason="rpm") == 1


async def test_over_the_server_limit_is_400_over_the_key_limit_is_429(tmp_path: Path) -> None:
    chosen = settings(tmp_path, {"max_n": 2}, limits=LimitsSettings(max_n=4))
    backend = ScriptedBackend()
    async with app_client(backend, settings=chosen) as client:
        server = await client.post("/v1/chat/completions", json=chat_body(n=5), headers=auth())
        key = await client.post("/v1/chat/completions", json=chat_body(n=3), headers=auth())
        ok = await client.post("/v1/chat/completions", json=chat_body(n=2), headers=auth())
    assert server.status_code == 400 and error_of(server)["param"] == "n"
    assert key.status_code == 429
    assert error_of(key)["param"] == "n" and error_of(key)["code"] == "rate_limit_exceeded"
    # Waiting cannot help: no Retry-After, and the openai SDKs are told not to retry.
    assert "retry-after" not in key.headers and key.headers["x-should-retry"] == "false"
    assert ok.status_code == 200
    assert len(backend.calls) == 1  # the refused requests reached no backend


async def test_strategies_and_search_budgets_a_key_may_use(tmp_path: Path) -> None:
    limits = {"strategies": ["none", "majority_vote"], "max_search_tokens": 100}
    async with app_client(ScriptedBackend(), settings=settings(tmp_path, limits)) as client:
        beam = await client.post(
            "/v1/chat/completions",
            json=chat_body(reasoning_strategy="beam_search"),
            headers=auth(),
        )
        big = await client.post(
            "/v1/chat/completions",
            json=chat_body(
                reasoning_strategy="majority_vote",
                reasoning_params={"n": 2, "budget": {"tokens": 500}},
            ),
            headers=auth(),
        )
        # Without a budget, what it may spend counts: 2 candidates of 40 tokens fit in 100.
        vote = await client.post(
            "/v1/chat/completions",
            json=chat_body(
                reasoning_strategy="majority_vote", reasoning_params={"n": 2}, max_tokens=40
            ),
            headers=auth(),
        )
    assert beam.status_code == 429 and error_of(beam)["param"] == "reasoning_strategy"
    assert big.status_code == 429 and error_of(big)["param"] == "reasoning_params.budget"
    assert error_of(big)["type"] == "tokens"
    assert vote.status_code == 200


async def test_tokens_reserved_at_admission_and_charged_as_spent(tmp_path: Path) -> None:
    # The scripted answer is 4 tokens; a request reserves its max_tokens.
    chosen = settings(tmp_path, {"tpm": 100})
    backend = ScriptedBackend(["The answer is 4."])
    async with app_client(backend, settings=chosen) as client:
        huge = await client.post(
            "/v1/chat/completions", json=chat_body(max_tokens=101), headers=auth()
        )
        answers = [
            await client.post("/v1/chat/completions", json=chat_body(max_tokens=60), headers=auth())
            for _ in range(3)
        ]
        scrape = Samples.parse((await client.get("/metrics")).text)
    # More than the minute holds: never admitted, said at once.
    assert huge.status_code == 429 and error_of(huge)["param"] == "max_tokens"
    assert huge.headers["x-should-retry"] == "false"
    # Each reserved 60 but was charged its 4 tokens, so three fit in 100.
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert scrape.get("ttc_key_tokens_total", key="alpha") == 12


async def test_a_spent_dollar_budget_is_429_insufficient_quota(tmp_path: Path) -> None:
    # $1 per million generated tokens and a budget of $0.0001: 100 tokens a day.
    prices = {SCRIPTED_MODEL: ModelPrice(completion=1.0)}
    chosen = settings(tmp_path, {"usd_per_day": 0.0001}, prices=prices)
    backend = ScriptedBackend(["one two three four five six seven eight nine ten"])
    async with app_client(backend, settings=chosen) as client:
        statuses = []
        for _ in range(12):
            response = await client.post(
                "/v1/chat/completions", json=chat_body(max_tokens=10), headers=auth()
            )
            statuses.append(response.status_code)
            if response.status_code != 200:
                break
        scrape = Samples.parse((await client.get("/metrics")).text)
    # Each request reserves at most 10 tokens and a prompt share, and spends 10.
    assert statuses[-1] == 429 and 8 <= statuses.count(200) <= 10
    error = error_of(response)
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert response.headers["x-should-retry"] == "false"
    assert int(response.headers["retry-after"]) <= 86400
    assert scrape.get("ttc_key_cost_dollars_total", key="alpha") == pytest.approx(
        statuses.count(200) * 10 / 1e6
    )


async def test_an_unpriced_model_has_no_dollar_limit(tmp_path: Path) -> None:
    chosen = settings(tmp_path, {"usd_per_day": 0.0000001})
    async with app_client(ScriptedBackend(), settings=chosen) as client:
        responses = [
            await client.post("/v1/chat/completions", json=chat_body(), headers=auth())
            for _ in range(3)
        ]
    assert [r.status_code for r in responses] == [200, 200, 200]


@pytest.mark.parametrize(
    ("mode", "limits", "status", "outcome"),
    [
        ("closed", {"rpm": 5}, 503, "refused"),
        ("open", {"rpm": 5, "usd_per_day": 1}, 200, "admitted"),
        ("open-rates", {"rpm": 5}, 200, "admitted"),
        ("open-rates", {"rpm": 5, "usd_per_day": 1}, 503, "refused"),
    ],
)
async def test_redis_unreachable(
    tmp_path: Path, mode: str, limits: dict[str, Any], status: int, outcome: str
) -> None:
    chosen = settings(
        tmp_path,
        limits,
        redis_url=SecretStr(f"redis://127.0.0.1:{free_port()}/0"),
        redis_on_error=mode,
        prices={SCRIPTED_MODEL: ModelPrice(completion=1.0)},
    )
    async with app_client(ScriptedBackend(), settings=chosen) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(), headers=auth())
        scrape = Samples.parse((await client.get("/metrics")).text)
    assert response.status_code == status
    if status == 503:
        assert error_of(response)["code"] == "limits_unavailable"
        assert response.headers["retry-after"] == "1"
    assert scrape.get("ttc_limit_store_errors_total", outcome=outcome) == 1


async def test_a_strategy_s_own_n_counts_against_max_n(tmp_path: Path) -> None:
    async with app_client(ScriptedBackend(), settings=settings(tmp_path, {"max_n": 4})) as client:
        # majority_vote draws 8 candidates by default (reasoning_effort medium).
        default = await client.post(
            "/v1/chat/completions",
            json=chat_body(reasoning_strategy="majority_vote"),
            headers=auth(),
        )
        four = await client.post(
            "/v1/chat/completions",
            json=chat_body(reasoning_strategy="majority_vote", reasoning_params={"n": 4}),
            headers=auth(),
        )
    assert default.status_code == 429
    assert error_of(default)["param"] == "reasoning_params.n"
    assert four.status_code == 200


async def test_a_stream_is_charged_what_it_spent_once_it_ends(tmp_path: Path) -> None:
    chosen = settings(tmp_path, {"tpm": 100, "max_in_flight": 1})
    backend = ScriptedBackend(["The answer is 4."])
    async with app_client(backend, settings=chosen) as client:
        for _ in range(3):
            response = await client.post(
                "/v1/chat/completions",
                json=chat_body(max_tokens=60, stream=True),
                headers=auth(),
            )
            assert response.status_code == 200 and "[DONE]" in response.text
        scrape = Samples.parse((await client.get("/metrics")).text)
    # Three streams of 4 tokens, each reserving 60 of 100 and one place in flight: each was
    # settled, or the second would have been refused.
    assert scrape.get("ttc_key_tokens_total", key="alpha") == 12
    assert scrape.get("ttc_key_rejected_requests_total", key="alpha") == 0


async def test_plain_completions_are_held_to_the_key_too(tmp_path: Path) -> None:
    chosen = settings(tmp_path, {"rpm": 1, "max_n": 2})
    async with app_client(ScriptedBackend(), settings=chosen) as client:
        body = {"model": SCRIPTED_MODEL, "prompt": ["a", "b"], "max_tokens": 2}
        too_many = await client.post("/v1/completions", json={**body, "n": 3}, headers=auth())
        first = await client.post("/v1/completions", json=body, headers=auth())
        second = await client.post("/v1/completions", json=body, headers=auth())
        scrape = Samples.parse((await client.get("/metrics")).text)
    assert too_many.status_code == 429 and error_of(too_many)["param"] == "n"
    assert first.status_code == 200 and second.status_code == 429
    assert (
        scrape.get("ttc_key_tokens_total", key="alpha")
        == first.json()["usage"]["completion_tokens"]
    )


def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTC_API_KEYS", "sk-one,sk-two")
    monkeypatch.setenv("TTC_REDIS_ON_ERROR", "open-rates")
    ring = Settings().key_ring()
    assert ring is not None and ring.aliases == ("key-1", "key-2")
    assert Settings().redis_on_error == "open-rates"
    # The keys never show in the settings' repr (logs, tracebacks).
    assert "sk-one" not in repr(Settings())


async def test_a_claim_is_settled_once_however_often_it_is_asked() -> None:
    # A stream settles as it ends, and again (a no-op) after its response, in case it never
    # started.
    metrics = Metrics(CollectorRegistry())
    quotas = Quotas(MemoryLimitStore(60), metrics, {})
    key = ApiKey("alpha", KeyLimits(max_in_flight=1))
    need = Estimate("none", 1, "n", None, tokens=50, prompt_tokens=1)
    claim = await quotas.admit(key, SCRIPTED_MODEL, "req-1", need)
    spent = Usage(prompt_tokens=3, completion_tokens=7)
    first = quotas.settle(claim, spent)
    assert first is not None
    await first
    assert quotas.settle(claim, spent) is None
    await quotas.aclose()
    assert metrics.key_tokens.labels("alpha")._value.get() == 7
    # Its place in flight was freed: another request of the key is admitted.
    assert (await quotas.admit(key, SCRIPTED_MODEL, "req-2", need)).reservation is not None


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_requests_sharing_a_client_request_id_each_take_a_place_in_flight(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Eight at once under max_in_flight 2, all with one X-Request-Id: they were all admitted,
    # the client's id being the key of their one place in flight.
    more: dict[str, Any] = {}
    if store == "redis":
        url: str = request.getfixturevalue("redis_url")
        more["redis_url"] = SecretStr(url)
    chosen = settings(tmp_path, {"max_in_flight": 2}, **more)
    backend = ScriptedBackend(["4"], delay_s=0.3)
    async with app_client(backend, settings=chosen) as client:
        headers = {**auth(), "X-Request-Id": "shared-id"}
        answers = await asyncio.gather(
            *(
                client.post("/v1/chat/completions", json=chat_body(), headers=headers)
                for _ in range(8)
            )
        )
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 200] + [429] * 6
    assert all(r.headers["x-request-id"] == "shared-id" for r in answers)


async def test_under_a_root_path_every_route_still_needs_its_key(tmp_path: Path) -> None:
    # `uvicorn --root-path /ttc` puts the root in the path; the middlewares compared the raw
    # path, so /ttc/v1/... passed without a key and past its limits.
    chosen = settings(tmp_path, {"rpm": 1}, metrics_token=SecretStr("metrics-secret"))
    app = create_app(chosen, backend=ScriptedBackend(["4"]))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, root_path="/ttc")
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            anonymous = [
                await client.post("/ttc/v1/chat/completions", json=chat_body()),
                await client.get("/ttc/v1/models"),
                await client.get("/ttc/metrics"),
                await client.post("/ttc/tokenize", json={"model": SCRIPTED_MODEL, "prompt": "a"}),
            ]
            keyed = [
                await client.post("/ttc/v1/chat/completions", json=chat_body(), headers=auth())
                for _ in range(3)
            ]
    assert [r.status_code for r in anonymous] == [401, 401, 401, 401]
    assert [r.status_code for r in keyed] == [200, 429, 429]


async def test_a_stream_the_client_abandons_is_charged_what_its_run_spent(tmp_path: Path) -> None:
    # Settled the moment the client left, before the cancelled strategy had counted the call
    # it had in flight: 29 tokens generated, 0 charged.
    chosen = settings(tmp_path, {"tpm": 100_000})
    words = " ".join(f"w{i}" for i in range(40))
    app = create_app(chosen, backend=ScriptedBackend([words], delay_s=0.01))
    body = json.dumps(chat_body(stream=True, max_tokens=64)).encode()
    chunks: list[bytes] = []
    gone = asyncio.Event()

    async def receive() -> Message:
        if not chunks and not gone.is_set():
            gone.set()  # the first call: the body
            return {"type": "http.request", "body": body, "more_body": False}
        while len(chunks) < 6:  # then leave, some tokens into the answer
            await asyncio.sleep(0.005)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            chunks.append(message["body"])

    scope = http_scope("/v1/chat/completions", [(b"authorization", f"Bearer {KEY}".encode())])
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)
        await asyncio.sleep(0.2)  # the settlement runs in the background
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            scrape = Samples.parse((await client.get("/metrics")).text)
    text = "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in sse_events(b"".join(chunks).decode())[:-1]
        if e.get("choices")
    )
    streamed = len(text.split())
    charged = scrape.get("ttc_key_tokens_total", key="alpha")
    assert 0 < streamed < 40
    assert charged >= streamed


async def test_the_token_ceiling_holds_when_the_request_names_no_budget(tmp_path: Path) -> None:
    # Only a named budget was checked: a search without one spent 27,120 tokens under 50.
    chosen = settings(tmp_path, {"max_search_tokens": 50})
    async with app_client(ScriptedBackend(["4"]), settings=chosen) as client:
        unbounded = await client.post(
            "/v1/chat/completions",
            json=chat_body(reasoning_strategy="beam_search", reasoning_params={"n": 4}),
            headers=auth(),
        )
        within = await client.post(
            "/v1/chat/completions", json=chat_body(max_tokens=20), headers=auth()
        )
    assert unbounded.status_code == 429
    error = error_of(unbounded)
    assert error["param"] == "reasoning_params.budget" and "may spend" in error["message"]
    assert within.status_code == 200


async def test_the_tokenizer_routes_count_against_the_key(tmp_path: Path) -> None:
    # They reached the backend outside every per-key limit.
    chosen = settings(tmp_path, {"rpm": 2})
    async with app_client(ScriptedBackend(["4"]), settings=chosen) as client:
        answers = [
            await client.post(
                "/tokenize", json={"model": SCRIPTED_MODEL, "prompt": "a b"}, headers=auth()
            ),
            await client.post(
                "/detokenize", json={"model": SCRIPTED_MODEL, "tokens": [1]}, headers=auth()
            ),
            await client.get("/tokenizer_info", headers=auth()),
        ]
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert answers[0].json()["count"] >= 1


async def test_an_echo_batch_reserves_a_call_per_prompt_and_is_capped(tmp_path: Path) -> None:
    # An echo batch reserved 0 tokens and fanned out a call per prompt: 5,000 calls for a key
    # limited to 1 token a minute.
    chosen = settings(tmp_path, {"tpm": 10}, limits=LimitsSettings(max_batch_prompts=100))
    backend = ScriptedBackend(["4"])
    async with app_client(backend, settings=chosen) as client:
        batch = {"model": SCRIPTED_MODEL, "echo": True, "max_tokens": 0}
        over_tpm = await client.post(
            "/v1/completions", json={**batch, "prompt": ["a"] * 50}, headers=auth()
        )
        over_cap = await client.post(
            "/v1/completions", json={**batch, "prompt": ["a"] * 101}, headers=auth()
        )
        fits = await client.post(
            "/v1/completions", json={**batch, "prompt": ["a"] * 5}, headers=auth()
        )
    assert over_tpm.status_code == 429 and error_of(over_tpm)["type"] == "tokens"
    assert over_cap.status_code == 400 and error_of(over_cap)["param"] == "prompt"
    assert fits.status_code == 200
    assert len(backend.calls) == 5
