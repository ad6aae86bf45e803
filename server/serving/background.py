"""Responses kept past their connection: background runs (`background: true`), stored
responses (`store: true`) and the conversations `previous_response_id` continues.

A background response runs as a task of the replica that took it, streaming its events into the
store (`server.response_store`) as a streamed response would send them. Any replica answers
`GET /v1/responses/{id}` (the response as it stands), streams its events from any number on
(`starting_after`), and cancels it: the cancel marks the record, and the replica running it sees
the mark at its next lease renewal (at once when it is the same replica) and cancels the run,
whose backend calls are cancelled with it. The key that created a response is the only one that
sees it, and is charged for it when it ends, as a request in flight until then.

The runner renews a lease on the record every third of `lease_s`; a replica that dies leaves a
lease that lapses, and the first reader then marks the response failed (a run is not taken over:
its strategy's state is in the dead replica's memory, and running it again would charge the key
twice). A drain lets background runs finish within the grace period; those still running then
end as failed, saying the server shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from backends.base import ChatMessage, ChatPrompt, ToolCall
from server.errors import Overloaded, ResponseNotFound, ShuttingDown
from server.protocol.errors import InvalidRequest
from server.response_store import (
    RUNNING,
    TERMINAL,
    ResponseStore,
    StoredResponse,
    lapse_if_dead,
)
from server.serving.preparing import PreparedRequest
from server.serving.responses import ResponsesRendering
from server.serving.running import Serving

__all__ = ["BackgroundResponses", "conversation_of", "messages_of"]

logger = logging.getLogger(__name__)

SHUT_DOWN = "the server shut down before this response finished; create it again"
# How often a reader of a running response looks for new events.
_POLL_S = 0.1


def _missing(response_id: str) -> ResponseNotFound:
    return ResponseNotFound(f"no response with id {response_id!r}")


class BackgroundResponses:
    """The app's kept responses and the background runs of this replica (a lifespan object)."""

    def __init__(
        self, serving: Serving, store: ResponseStore, lease_s: float, max_running: int = 256
    ) -> None:
        self.serving = serving
        self.store = store
        self.lease_s = lease_s
        self.max_running = max_running
        self._runs: dict[str, asyncio.Task[None]] = {}
        # Runs whose task has begun: one cancelled before that never runs its clean-up, so it
        # is left to find the cancel when it begins.
        self._begun: set[str] = set()
        self._closing = False

    async def start(
        self,
        prepared: PreparedRequest,
        rendering: ResponsesRendering,
        owner: str,
        settle: Callable[[], Awaitable[None]],
        keep_conversation: bool,
    ) -> dict[str, Any]:
        """Keep a queued response and start running it; what the client gets at once. A
        replica running `max_running` already, or draining, turns it away (503)."""
        if self._closing:
            raise ShuttingDown("the server is shutting down; create it on another replica")
        if len(self._runs) >= self.max_running:
            raise Overloaded(
                f"this replica runs {self.max_running} background responses already; retry "
                "later or on another replica"
            )
        queued = rendering.snapshot("queued")
        response_id = prepared.request_id
        await self.store.create(StoredResponse(response_id, owner, "queued", queued))
        # Leased before anyone can read it, so that no reader finds it unleased.
        await self.store.renew(response_id, self.lease_s)
        run = asyncio.create_task(
            self._run(prepared, rendering, settle, keep_conversation), name=response_id
        )
        self._runs[response_id] = run
        run.add_done_callback(lambda _: self._runs.pop(response_id, None))
        run.add_done_callback(lambda _: self._begun.discard(response_id))
        return queued

    async def keep(
        self, response_id: str, owner: str, response: dict[str, Any], prompt: ChatPrompt
    ) -> None:
        """Keep a finished response (`store: true`) for `GET` and `previous_response_id`."""
        record = StoredResponse(response_id, owner, response["status"], response)
        record.conversation = conversation_of(prompt, response)
        await self.store.create(record)

    async def get(self, response_id: str, owner: str) -> StoredResponse:
        """The response as it stands (failed, if its replica died); 404 for another key's."""
        record = await self.store.get(response_id)
        if record is None or record.owner != owner:
            raise _missing(response_id)
        return await lapse_if_dead(self.store, record)

    async def history(self, response_id: str, owner: str) -> tuple[ChatMessage, ...]:
        """The turns a response ended, for a request that continues it."""
        record = await self.store.get(response_id)
        if record is None or record.owner != owner:
            raise InvalidRequest(
                f"previous_response_id {response_id!r} is not a stored response of this key "
                "(store: true keeps one)",
                "previous_response_id",
            )
        if record.conversation is None:
            raise InvalidRequest(
                f"previous_response_id {response_id!r} has not finished "
                f"(status {record.status!r}); continue it once it has",
                "previous_response_id",
            )
        return messages_of(record.conversation)

    async def cancel(self, response_id: str, owner: str) -> StoredResponse:
        """Cancel a background response: its run stops (on whichever replica runs it) and the
        key is charged what it spent. A finished one is returned as it is."""
        record = await self.get(response_id, owner)
        if record.status in RUNNING and await self.store.cancel(response_id):
            run = self._runs.get(response_id)
            if run is not None and response_id in self._begun:
                run.cancel()
            record = await self.store.get(response_id) or record
        return record

    async def events(self, response_id: str, owner: str, after: int) -> AsyncIterator[str]:
        """The response's events after number `after`, then each new one as it comes, until it
        has ended."""
        await self.get(response_id, owner)
        start = after + 1
        while True:
            events = await self.store.events(response_id, start)
            for event in events:
                yield event
            start += len(events)
            if events:
                continue
            record = await self.store.get(response_id)
            if record is None:
                return
            record = await lapse_if_dead(self.store, record)
            if record.status in TERMINAL:
                # Whatever the run appended before it ended.
                for event in await self.store.events(response_id, start):
                    yield event
                return
            await asyncio.sleep(_POLL_S)

    async def aclose(self, grace_s: float) -> None:
        """Let runs finish within `grace_s`, then end the rest as failed."""
        self._closing = True
        runs = list(self._runs.values())
        if runs:
            logger.info("waiting up to %.0f s for %d background responses", grace_s, len(runs))
            _, late = await asyncio.wait(runs, timeout=grace_s)
            for run in late:
                run.cancel()
            if late:
                await asyncio.wait(late)
        await self.store.aclose()

    async def _run(
        self,
        prepared: PreparedRequest,
        rendering: ResponsesRendering,
        settle: Callable[[], Awaitable[None]],
        keep_conversation: bool,
    ) -> None:
        response_id = prepared.request_id
        self._begun.add(response_id)
        task = asyncio.current_task()
        assert task is not None
        keeper = asyncio.create_task(self._keep_leased(response_id, task))
        final: dict[str, Any] | None = None
        started = False
        events = _Pending()
        try:
            if await self.store.status(response_id) == "cancelled":
                raise asyncio.CancelledError  # before it began: nothing ran, nothing spent
            async for event in self.serving.stream(prepared, rendering):
                if event.startswith(":"):
                    continue  # a keep-alive comment: nothing to replay
                if events.add(event):
                    await self.store.append(response_id, events.take())
                if not started:
                    started = await self.store.advance(response_id, "in_progress")
            await self.store.append(response_id, events.take())
            final = rendering.final
        except asyncio.CancelledError:
            await prepared.run.unwound()
            if self._closing:
                final = {
                    **rendering.snapshot("failed", prepared.spent),
                    "error": {"code": "server_error", "message": SHUT_DOWN},
                }
            else:
                final = rendering.snapshot("cancelled", prepared.spent)
        except Exception:
            logger.exception("background response %s failed", response_id)
            final = {
                **rendering.snapshot("failed", prepared.spent),
                "error": {"code": "server_error", "message": "the server failed to run it"},
            }
        finally:
            keeper.cancel()
            with contextlib.suppress(Exception):
                await settle()
            if final is not None:
                prompt = prepared.request.prompt
                conversation = (
                    conversation_of(prompt, final)
                    if keep_conversation and isinstance(prompt, ChatPrompt)
                    else None
                )
                try:
                    await self.store.finish(response_id, final, conversation)
                except Exception:
                    # Its lease lapses and a reader marks it failed.
                    logger.exception("background response %s: its end was not stored", response_id)

    async def _keep_leased(self, response_id: str, run: asyncio.Task[None]) -> None:
        """Renew the run's lease, and stop the run once it is cancelled (from any replica)."""
        every = self.lease_s / 3
        while True:
            await asyncio.sleep(every)
            began = time.monotonic()
            try:
                await self.store.renew(response_id, self.lease_s)
                status = await self.store.status(response_id)
            except Exception:
                logger.warning("background response %s: lease not renewed", response_id)
                continue
            if status == "cancelled":
                run.cancel()
                return
            if time.monotonic() - began > every:
                logger.warning("background response %s: the store is slow", response_id)


class _Pending:
    """A run's events not yet stored: the text deltas of a stream are stored together, every
    `_BATCH_S` at most, rather than one store write each; any other event at once."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.since = time.monotonic()

    def add(self, event: str) -> bool:
        """Hold `event`; whether the held ones are due to be stored."""
        if not self.events:
            self.since = time.monotonic()
        self.events.append(event)
        delta = event.startswith(_DELTAS)
        return not delta or time.monotonic() - self.since >= _BATCH_S

    def take(self) -> list[str]:
        taken, self.events = self.events, []
        return taken


# The events a stream sends most of, one per piece of text.
_DELTAS = ("event: response.output_text.delta", "event: response.reasoning_text.delta")
_BATCH_S = 0.05


def conversation_of(prompt: ChatPrompt, response: dict[str, Any]) -> list[dict[str, Any]]:
    """The turns a finished response ends: its prompt's, then its answer as an assistant turn
    (its reasoning and calls included), as JSON."""
    turns = [_turn(m) for m in prompt.messages]
    text, reasoning, calls = "", None, []
    for item in response.get("output") or ():
        kind = item.get("type")
        if kind == "message":
            text += "".join(p.get("text", "") for p in item.get("content") or ())
        elif kind == "reasoning":
            reasoning = "".join(p.get("text", "") for p in item.get("content") or ())
        elif kind == "function_call":
            calls.append(
                {"id": item["call_id"], "name": item["name"], "arguments": item["arguments"]}
            )
    turns.append({"role": "assistant", "content": text, "reasoning": reasoning, "calls": calls})
    return turns


def _turn(message: ChatMessage) -> dict[str, Any]:
    return {
        "role": message.role,
        "content": message.content,
        "reasoning": message.reasoning,
        "calls": [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls
        ],
        "call_id": message.tool_call_id,
    }


def messages_of(conversation: list[dict[str, Any]]) -> tuple[ChatMessage, ...]:
    """The chat turns a stored conversation holds."""
    return tuple(
        ChatMessage(
            turn["role"],
            turn.get("content") or "",
            reasoning=turn.get("reasoning"),
            tool_calls=tuple(
                ToolCall(c["id"], c["name"], c["arguments"]) for c in turn.get("calls") or ()
            ),
            tool_call_id=turn.get("call_id"),
        )
        for turn in conversation
    )
