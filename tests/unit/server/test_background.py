"""Kept and background responses through the openai SDK's own calls (`responses.create` with
`background` or `store`, `retrieve`, `retrieve(stream=True, starting_after=...)`, `cancel`),
on a scripted backend; the store's lease, a drain, and `text.format`."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response

from backends.scripted import ScriptedBackend
from server.app import create_app
from server.response_store import LAPSED, MemoryResponseStore, StoredResponse, lapse_if_dead
from server.settings import Settings
from tests.factories import SCRIPTED_MODEL, app_client, sdk_client

ANSWER = "First step.\n\nSecond step.\n\nAnswer: 4"
VOTE = {"reasoning_strategy": "majority_vote", "reasoning_params": {"n": 3}}


async def until_ended(client: openai.AsyncOpenAI, response_id: str) -> Response:
    for _ in range(200):
        shown = await client.responses.retrieve(response_id)
        if shown.status not in ("queued", "in_progress"):
            return shown
        await asyncio.sleep(0.02)
    raise AssertionError(f"{response_id} never ended")


async def test_a_background_response_answers_at_once_and_is_read_when_done() -> None:
    backend = ScriptedBackend([ANSWER], delay_s=0.2)
    async with sdk_client(backend) as client:
        created = await client.responses.create(
            model=SCRIPTED_MODEL, input="What is 2 + 2?", background=True, extra_body=VOTE
        )
        assert created.status == "queued"
        assert created.output == []
        while not backend.calls:
            await asyncio.sleep(0.01)
        running = await client.responses.retrieve(created.id)
        assert running.status == "in_progress"
        done = await until_ended(client, created.id)
        direct = await client.responses.create(
            model=SCRIPTED_MODEL, input="What is 2 + 2?", extra_body=VOTE
        )
    assert done.status == "completed"
    assert done.output_text == direct.output_text == ANSWER
    assert done.usage is not None and direct.usage is not None
    assert done.usage.output_tokens == direct.usage.output_tokens


async def test_its_events_resume_after_any_number_and_end_with_the_response() -> None:
    backend = ScriptedBackend([ANSWER], delay_s=0.05)
    async with sdk_client(backend) as client:
        created = await client.responses.create(
            model=SCRIPTED_MODEL, input="What is 2 + 2?", background=True
        )
        everything = [e async for e in await client.responses.retrieve(created.id, stream=True)]
        later = [
            e
            async for e in await client.responses.retrieve(
                created.id, stream=True, starting_after=3
            )
        ]
    numbers = [e.sequence_number for e in everything]
    assert numbers == list(range(len(everything)))
    assert everything[0].type == "response.created"
    assert everything[-1].type == "response.completed"
    assert [e.sequence_number for e in later] == numbers[4:]
    deltas = "".join(getattr(e, "delta", "") for e in everything if e.type.endswith("text.delta"))
    assert deltas == ANSWER


async def test_a_cancel_stops_the_run_and_charges_what_it_spent() -> None:
    # Each call takes 2 s: the cancel comes while the first is in flight.
    backend = ScriptedBackend([ANSWER], delay_s=2.0)
    async with sdk_client(backend) as client:
        created = await client.responses.create(
            model=SCRIPTED_MODEL, input="What is 2 + 2?", background=True
        )
        while not backend.calls:
            await asyncio.sleep(0.01)
        cancelled = await client.responses.cancel(created.id)
        assert cancelled.status == "cancelled"
        ended = await until_ended(client, created.id)
        # The run unwound and wrote what it spent; a second cancel changes nothing.
        for _ in range(100):
            ended = await client.responses.retrieve(created.id)
            if ended.usage is not None:
                break
            await asyncio.sleep(0.02)
        again = await client.responses.cancel(created.id)
    assert ended.status == again.status == "cancelled"
    assert ended.usage is not None
    assert len(backend.calls) == 1


async def test_store_and_previous_response_id_continue_the_conversation() -> None:
    backend = ScriptedBackend(["Noted: 7.", "You said 7."])
    async with sdk_client(backend) as client:
        first = await client.responses.create(
            model=SCRIPTED_MODEL, input="Remember 7.", store=True, instructions="Be brief."
        )
        second = await client.responses.create(
            model=SCRIPTED_MODEL, input="What did I say?", previous_response_id=first.id
        )
        with pytest.raises(openai.BadRequestError) as unknown:
            await client.responses.create(
                model=SCRIPTED_MODEL, input="x", previous_response_id="resp_none"
            )
    assert second.output_text == "You said 7."
    prompt: Any = backend.calls[-1].prompt
    turns = [(m.role, m.content) for m in prompt.messages]
    # The earlier turns, without the earlier instructions (as OpenAI does), then the new one.
    assert turns == [
        ("user", "Remember 7."),
        ("assistant", "Noted: 7."),
        ("user", "What did I say?"),
    ]
    assert unknown.value.param == "previous_response_id"


async def test_another_keys_response_is_not_found(tmp_path: Any) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        "- {alias: alpha, key: sk-alpha-0123456789}\n- {alias: beta, key: sk-beta-0123456789}\n"
    )
    settings = Settings.model_validate({"api_keys": str(keys)})
    async with app_client(ScriptedBackend(["4"]), settings=settings) as client:
        alpha = {"Authorization": "Bearer sk-alpha-0123456789"}
        beta = {"Authorization": "Bearer sk-beta-0123456789"}
        body = {"model": SCRIPTED_MODEL, "input": "2 + 2?", "store": True}
        created = (await client.post("/v1/responses", json=body, headers=alpha)).json()
        mine = await client.get(f"/v1/responses/{created['id']}", headers=alpha)
        theirs = await client.get(f"/v1/responses/{created['id']}", headers=beta)
        cancel = await client.post(f"/v1/responses/{created['id']}/cancel", headers=beta)
    assert mine.status_code == 200
    assert theirs.status_code == cancel.status_code == 404
    assert theirs.json()["error"]["type"] == "not_found_error"


async def test_a_run_whose_lease_lapsed_reads_as_failed() -> None:
    store = MemoryResponseStore(ttl_s=60, max_per_owner=10)
    queued = {"id": "resp_1", "status": "in_progress", "output": []}
    await store.create(StoredResponse("resp_1", "", "in_progress", queued))
    await store.renew("resp_1", lease_s=0.05)
    assert (await lapse_if_dead(store, (await store.get("resp_1")))).status == "in_progress"  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    record = await store.get("resp_1")
    assert record is not None
    failed = await lapse_if_dead(store, record)
    assert failed.status == "failed"
    assert failed.response["error"]["message"] == LAPSED


async def test_an_owner_keeps_at_most_its_bound_oldest_first() -> None:
    store = MemoryResponseStore(ttl_s=60, max_per_owner=2)
    for i in range(3):
        await store.create(StoredResponse(f"r{i}", "alpha", "completed", {}, created=float(i)))
    await store.create(StoredResponse("other", "beta", "completed", {}, created=0.0))
    assert [await store.get(i) is not None for i in ("r0", "r1", "r2", "other")] == [
        False,
        True,
        True,
        True,
    ]


async def test_a_drain_ends_a_run_past_its_grace_as_failed() -> None:
    backend = ScriptedBackend([ANSWER], delay_s=5.0)
    app = create_app(Settings(), backend=backend)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            body = {"model": SCRIPTED_MODEL, "input": "What is 2 + 2?", "background": True}
            created = (await client.post("/v1/responses", json=body)).json()
            while not backend.calls:
                await asyncio.sleep(0.01)
            kept = app.state.responses
            await kept.aclose(grace_s=0.05)
            record = await kept.store.get(created["id"])
    assert record is not None and record.status == "failed"
    assert "shut down" in record.response["error"]["message"]


@pytest.mark.parametrize(
    ("text_format", "schema"),
    [
        ({"type": "json_object"}, None),
        (
            {"type": "json_schema", "name": "sum", "schema": {"type": "object"}, "strict": True},
            {"type": "object"},
        ),
    ],
)
async def test_text_format_asks_for_json(
    text_format: dict[str, Any], schema: dict[str, Any] | None
) -> None:
    backend = ScriptedBackend(['{"sum": 4}'])
    async with app_client(backend) as client:
        body = {"model": SCRIPTED_MODEL, "input": "2 + 2?", "text": {"format": text_format}}
        answered = await client.post("/v1/responses", json=body)
    assert answered.status_code == 200, answered.text
    structured = backend.sampled[0].structured
    assert structured is not None and structured.json_schema == schema


async def test_a_background_run_holds_its_keys_place_in_flight_until_it_ends(
    tmp_path: Any,
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("- {alias: alpha, key: sk-alpha-0123456789, limits: {max_in_flight: 1}}\n")
    settings = Settings.model_validate({"api_keys": str(keys)})
    backend = ScriptedBackend([ANSWER], delay_s=0.5)
    async with app_client(backend, settings=settings) as client:
        alpha = {"Authorization": "Bearer sk-alpha-0123456789"}
        body = {"model": SCRIPTED_MODEL, "input": "2 + 2?", "background": True}
        created = (await client.post("/v1/responses", json=body, headers=alpha)).json()
        refused = await client.post("/v1/responses", json=body, headers=alpha)
        for _ in range(200):
            shown = (await client.get(f"/v1/responses/{created['id']}", headers=alpha)).json()
            if shown["status"] == "completed":
                break
            await asyncio.sleep(0.02)
        again = await client.post("/v1/responses", json=body, headers=alpha)
    assert refused.status_code == 429
    assert again.status_code == 200


async def test_a_replica_past_its_running_bound_turns_background_away() -> None:
    backend = ScriptedBackend([ANSWER], delay_s=1.0)
    settings = Settings.model_validate({"responses": {"max_running": 1}})
    async with app_client(backend, settings=settings) as client:
        body = {"model": SCRIPTED_MODEL, "input": "2 + 2?", "background": True}
        first = await client.post("/v1/responses", json=body)
        second = await client.post("/v1/responses", json=body)
        await client.post(f"/v1/responses/{first.json()['id']}/cancel")
    assert first.status_code == 200
    assert second.status_code == 503
    assert second.json()["error"]["code"] == "overloaded"
