"""Serving one request: resolve the strategy, run it as one task under the deadline, answer.

The same flow serves both endpoints; what differs (request parsing, response and chunk
shapes) comes from `server.protocol` and the endpoint's `Rendering`. A strategy runs as a single
task: when the deadline passes or the client goes away, cancelling it cancels every backend call
it has in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.types import Receive

from backends.base import Backend
from backends.tool_calls import call_deltas
from server.errors import (
    ModelNotFound,
    RequestTimeout,
    error_response,
    error_status,
)
from server.metrics import Metrics
from server.protocol.common import GenerationRequest
from server.protocol.errors import InvalidRequest
from server.serving.rendering import Rendering
from server.settings import ModelPrice
from strategies.accounting import Usage
from strategies.base import (
    ChoiceDelta,
    EventSink,
    ParamsContext,
    Progress,
    StrategyParams,
    StrategyRequest,
    StrategyResult,
)
from strategies.budget import Allowance
from strategies.context import StrategyContext
from strategies.limits import Limits
from strategies.registry import STRATEGIES, check_answer_kind, get_strategy, parse_params
from strategies.strategy import Strategy
from verifiers.base import Verifier
from verifiers.registry import prm_names

__all__ = [
    "Deployment",
    "PreparedRequest",
    "Serving",
    "request_status",
    "run_until_disconnected",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True)
class Deployment:
    """One served model: the backend that generates its text and the verifiers its requests
    may name."""

    backend: Backend
    verifiers: Mapping[str, Verifier]
    params_context: ParamsContext


@dataclass(frozen=True)
class PreparedRequest:
    """A validated request, ready to run."""

    deployment: Deployment
    strategy: Strategy[Any]
    params: StrategyParams
    request: StrategyRequest
    model: str
    request_id: str
    with_trace: bool
    include_usage: bool
    stream_progress: bool = False
    # What the run spends, as it spends it: its key is charged this however the run ends.
    spent: Usage = field(default_factory=Usage)


class Serving:
    """Runs strategies for the routes; built once per app in its lifespan.

    It serves the backend's own model and, by name, any further models (each with its own
    backend and verifiers) given in `more`. A stream that has sent nothing for `keepalive_s`
    sends an SSE comment, so that proxies keep the connection of a strategy still deciding.
    """

    def __init__(
        self,
        backend: Backend,
        limits: Limits,
        metrics: Metrics,
        verifiers: Mapping[str, Verifier] | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        more: Mapping[str, tuple[Backend, Mapping[str, Verifier]]] | None = None,
        keepalive_s: float = 10.0,
    ) -> None:
        self.limits = limits
        self.keepalive_s = keepalive_s
        self.metrics = metrics
        self.prices = dict(prices or {})
        self.primary = self._deployment(backend, verifiers or {})
        self.named = {name: self._deployment(*served) for name, served in (more or {}).items()}

    @property
    def backend(self) -> Backend:
        """The backend of the model served without a name in the settings."""
        return self.primary.backend

    async def models(self) -> dict[str, Deployment]:
        """Every served model by name, the primary first."""
        return {await self.primary.backend.model_name(): self.primary, **self.named}

    async def deployment(self, model: str) -> Deployment:
        """The deployment serving `model`; `ModelNotFound` if none does."""
        named = self.named.get(model)
        if named is not None:
            return named
        served = await self.primary.backend.model_name()
        if model != served:
            raise ModelNotFound(model, [served, *self.named])
        return self.primary

    def _deployment(self, backend: Backend, verifiers: Mapping[str, Verifier]) -> Deployment:
        context = ParamsContext(
            verifiers=frozenset(verifiers),
            prms=prm_names(verifiers),
            limits=self.limits,
            logprob_verifiers=frozenset(n for n, v in verifiers.items() if v.logprobs is not None),
        )
        return Deployment(backend, dict(verifiers), context)

    async def prepare(self, body: GenerationRequest, request_id: str) -> PreparedRequest:
        """Check the model, the limits, the strategy and its params; 4xx errors come from here."""
        started = time.perf_counter()
        label = body.reasoning_strategy if body.reasoning_strategy in STRATEGIES else "invalid"
        model = "unknown"
        try:
            deployment = await self.deployment(body.model)
            model = body.model
            unsupported = body.unsupported_field()
            if unsupported is not None:
                raise InvalidRequest(f"{unsupported} is not supported by this server", unsupported)
            if ignored := body.ignored_fields():
                logger.warning("ignoring unknown request fields: %s", ", ".join(ignored))
            request = body.to_strategy_request(self.limits)
            strategy = get_strategy(body.reasoning_strategy)
            check_answer_kind(strategy, request)
            context = deployment.params_context
            if (price := self.prices.get(model)) is not None:
                # A `usd` budget is valid only for a priced model.
                context = dataclasses.replace(context, price=price)
            params = parse_params(strategy, body.reasoning_params, context)
            params.check_request(request)
        except Exception as exc:
            self._observe(label, model, exc, started)
            raise
        return PreparedRequest(
            deployment=deployment,
            strategy=strategy,
            params=params,
            request=request,
            model=model,
            request_id=request_id,
            with_trace=params.is_trace_asked,
            include_usage=body.include_usage,
            # Only a stream has somewhere to send progress lines; a plain answer ignores them.
            stream_progress=body.stream and params.is_progress_asked,
        )

    async def complete(self, prepared: PreparedRequest) -> StrategyResult:
        """Run to the end and return the result."""
        started = time.perf_counter()
        ctx = self._context(prepared, sink=None)
        try:
            result = await self._execute(prepared, ctx)
        except BaseException as exc:
            self._observe(prepared.strategy.name, prepared.model, exc, started, ctx)
            raise
        self._observe(prepared.strategy.name, prepared.model, None, started, ctx, result)
        return result

    async def stream(
        self, prepared: PreparedRequest, rendering: Rendering
    ) -> AsyncGenerator[str, None]:
        """Server-Sent Events: deltas as the strategy produces them, then what closes the stream
        (usage, the final state), in `rendering`'s framing; an SSE comment whenever nothing was
        sent for `keepalive_s`."""
        started = time.perf_counter()
        # Unbounded: a request's deltas are bounded by its own max_tokens and n, and the end
        # sentinel below must never find the queue full.
        deltas: asyncio.Queue[ChoiceDelta | _KeepAlive | None] = asyncio.Queue()
        ctx = self._context(prepared, sink=deltas.put)
        task = asyncio.create_task(self._execute(prepared, ctx), name=prepared.request_id)
        # Queued behind every delta the strategy emitted, so the loop below sees them all.
        task.add_done_callback(lambda _: deltas.put_nowait(None))
        keepalive = _KeepAlive(deltas, self.keepalive_s)
        outcome: BaseException | None = None
        try:
            for event in rendering.sse_opening(prepared.request.sampling.n):
                yield event
            streamed: set[int] = set()
            progressed = False
            while (delta := await deltas.get()) is not None:
                if isinstance(delta, _KeepAlive):
                    yield _KEEPALIVE_COMMENT
                elif isinstance(delta, Progress):
                    # How the run is going, not the answer: that is still to be sent whole.
                    progressed = True
                    for event in rendering.sse_delta(delta):
                        yield event
                else:
                    if not streamed:
                        self._first_text(prepared, started)
                    streamed.add(delta.index)
                    for event in rendering.sse_delta(delta):
                        yield event
                keepalive.sent()
            keepalive.cancel()
            result = task.result()
            if not streamed:
                # A strategy that decides only at the end: its answer is the first text.
                self._first_text(prepared, started)
            for index, choice in enumerate(result.choices):
                if index not in streamed:
                    # A strategy that decides only at the end sends its answer in one piece;
                    # after progress lines, the reasoning streamed was theirs.
                    reasoning = "" if progressed else choice.reasoning or ""
                    whole = ChoiceDelta(
                        index,
                        choice.content,
                        reasoning,
                        choice.logprobs,
                        call_deltas(choice.tool_calls),
                    )
                    for event in rendering.sse_delta(whole):
                        yield event
                for event in rendering.sse_finish(index, choice.finish_reason):
                    yield event
            for event in rendering.sse_closing(result, prepared.include_usage):
                yield event
            self._observe(prepared.strategy.name, prepared.model, None, started, ctx, result)
        except Exception as exc:
            outcome = exc
            status, body = error_response(exc)
            logger.info(
                "stream %s failed with %d: %s", prepared.request_id, status, body.error.message
            )
            for event in rendering.sse_error(body):
                yield event
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            keepalive.cancel()
            task.cancel()
            if outcome is not None:
                # Once the cancelled strategy has unwound, so its calls in flight are counted.
                # (Awaiting it here would not do: a disconnect cancels this generator's scope.)
                failed = outcome
                task.add_done_callback(
                    lambda _: self._observe(
                        prepared.strategy.name, prepared.model, failed, started, ctx
                    )
                )
        for event in rendering.sse_end():
            yield event

    def _first_text(self, prepared: PreparedRequest, started: float) -> None:
        self.metrics.first_token(
            prepared.strategy.name, prepared.model, time.perf_counter() - started
        )

    def _context(self, prepared: PreparedRequest, sink: EventSink | None) -> StrategyContext:
        deadline = asyncio.get_running_loop().time() + self.limits.request_timeout_s
        self.metrics.started(prepared.strategy.name, prepared.model)
        return StrategyContext(
            backend=prepared.deployment.backend.session(prepared.request_id, deadline),
            request_id=prepared.request_id,
            verifiers=prepared.deployment.verifiers,
            limits=self.limits,
            deadline=deadline,
            sink=sink,
            usage=prepared.spent,
            price=self.prices.get(prepared.model),
            is_progress_asked=prepared.stream_progress,
        )

    async def _execute(self, prepared: PreparedRequest, ctx: StrategyContext) -> StrategyResult:
        """The strategy's run under the request's deadline."""
        timeout = self.limits.request_timeout_s
        deadline = asyncio.timeout(timeout)
        if isinstance(prepared.params, StrategyParams):
            # The budget's clock starts with the run.
            ctx.budget = Allowance.of(prepared.params.budget, ctx.usage, ctx.price)
        try:
            async with deadline:
                return await prepared.strategy.run(prepared.request, prepared.params, ctx)
        except TimeoutError as exc:
            if not deadline.expired():
                raise  # some call inside timed out on its own; that error says which
            raise RequestTimeout(f"The request did not finish within {timeout:g} s.") from exc

    def _observe(
        self,
        strategy: str,
        model: str,
        exc: BaseException | None,
        started: float,
        ctx: StrategyContext | None = None,
        result: StrategyResult | None = None,
    ) -> None:
        seconds = time.perf_counter() - started
        status = request_status(exc)
        self.metrics.observe(
            strategy,
            model,
            status,
            seconds,
            spent=(ctx.usage, ctx.stats) if ctx is not None else None,
            price=self.prices.get(model),
            stopped_early=result is not None and result.stopped_early is not None,
            fallback=result is not None and result.fallback is not None,
            tokens_saved=result.tokens_saved if result is not None else 0,
        )
        # One line per request, at DEBUG: `--access-log` is the cheap per-request line.
        if ctx is not None:
            usage = ctx.usage
            logger.debug(
                "strategy=%s status=%s calls=%d prompt_tokens=%d completion_tokens=%d "
                "verifier_tokens=%d duration=%.3fs",
                strategy,
                status,
                usage.calls,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.verifier_tokens,
                seconds,
            )
        else:
            logger.debug("strategy=%s status=%s duration=%.3fs", strategy, status, seconds)


def request_status(exc: BaseException | None) -> str:
    """The `status` label of a request that ended with `exc` (None: it succeeded)."""
    if exc is None:
        return "ok"
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        # The client went away (a stream's generator is closed with GeneratorExit).
        return "cancelled"
    code = error_status(exc)
    if code == 504:
        return "timeout"
    if code in (502, 503):
        return "backend_error"
    return "client_error" if code < 500 else "server_error"


# A comment line: clients skip it, proxies see the connection is alive.
_KEEPALIVE_COMMENT = ": keep-alive\n\n"


class _KeepAlive:
    """Puts itself in a stream's queue once `interval_s` passed with nothing sent.

    One timer per stream, re-armed only when it fires, for the later of the next due time and
    `interval_s` after the last send: while deltas flow, each costs one clock read (`sent`), no
    timer or task of its own.
    """

    def __init__(self, queue: asyncio.Queue[Any], interval_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = queue
        self._interval_s = interval_s
        self._last_sent = self._loop.time()
        self._is_pending = False
        self._timer = self._loop.call_at(self._last_sent + interval_s, self._fire)

    def sent(self) -> None:
        """Something (a delta or this comment) went out just now."""
        self._last_sent = self._loop.time()
        self._is_pending = False

    def cancel(self) -> None:
        """No more comments: the stream ends."""
        self._timer.cancel()

    def _fire(self) -> None:
        due = self._last_sent + self._interval_s
        now = self._loop.time()
        if now >= due:
            if not self._is_pending:
                # One at a time: a client too slow to take it gets no pile behind it.
                self._is_pending = True
                self._queue.put_nowait(self)
            due = now + self._interval_s
        self._timer = self._loop.call_at(due, self._fire)


async def run_until_disconnected(receive: Receive, work: Awaitable[_T]) -> _T | None:
    """Await `work`; if the client disconnects first (the body is already read), cancel it and
    return None."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        # The client is gone: let the cancellation finish, and answer nobody.
        await asyncio.gather(task, return_exceptions=True)
        return None
    return task.result()
