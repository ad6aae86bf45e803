"""Running a prepared request: its strategy as one task under the deadline, answered whole or
streamed.

The same flow serves every endpoint; what differs (request parsing, response and chunk shapes)
comes from `server.protocol` and the endpoint's `Rendering`. A strategy runs as a single task:
when the deadline passes or the client goes away, cancelling it cancels every backend call it
has in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

from backends.base import Backend
from backends.tool_calls import call_deltas
from server.errors import error_response
from server.metrics import Metrics
from server.protocol.common import GenerationRequest
from server.serving.deployments import Deployments, NamedModel
from server.serving.outcome import request_status, within_deadline
from server.serving.preparing import PreparedRequest, prepare_request
from server.serving.rendering import Rendering
from strategies.accounting import ModelPrice
from strategies.base import ChoiceDelta, EventSink, Progress, StrategyParams, StrategyResult
from strategies.budget import Allowance
from strategies.context import StrategyContext
from strategies.limits import Limits
from strategies.registry import STRATEGIES
from strategies.thinking_params import DEFAULT_TAGS, ThinkingTags
from verifiers.base import Verifier
from verifiers.equivalence import EquivalencePool

__all__ = ["Serving"]

logger = logging.getLogger(__name__)


class Serving:
    """Runs strategies for the routes; built once per app in its lifespan.

    It serves the backend's own model and, by name, the models of `named_models` (each with its
    own backend and verifiers). A stream that has sent nothing for `keepalive_s` sends an SSE
    comment, so that proxies keep the connection of a strategy still deciding.
    """

    def __init__(
        self,
        backend: Backend,
        limits: Limits,
        metrics: Metrics,
        verifiers: Mapping[str, Verifier] | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        named_models: Mapping[str, NamedModel] | None = None,
        keepalive_s: float = 10.0,
        equivalence: EquivalencePool | None = None,
        thinking_tags: ThinkingTags = DEFAULT_TAGS,
        tracer: Tracer | None = None,
        capture_text: bool = False,
    ) -> None:
        self.limits = limits
        self.tracer = tracer
        self.capture_text = capture_text
        self.equivalence = equivalence
        self.keepalive_s = keepalive_s
        self.metrics = metrics
        self.prices = dict(prices or {})
        self.deployments = Deployments(
            backend, verifiers or {}, named_models or {}, limits, thinking_tags
        )

    async def prepare(self, body: GenerationRequest, request_id: str) -> PreparedRequest:
        """Check the model, the limits, the strategy and its params; 4xx errors come from here."""
        started = time.perf_counter()
        label = body.reasoning_strategy if body.reasoning_strategy in STRATEGIES else "invalid"
        model = "unknown"
        try:
            deployment = await self.deployments.find(body.model)
            model = body.model
            return prepare_request(
                body, request_id, deployment, self.limits, self.prices.get(model)
            )
        except Exception as exc:
            self._observe(label, model, exc, started)
            raise

    async def complete(self, prepared: PreparedRequest) -> StrategyResult:
        """Run to the end and return the result."""
        started = time.perf_counter()
        ctx = self._context(prepared, sink=None)
        try:
            result = await self._execute(prepared, ctx)
        except BaseException as exc:
            self._observed(prepared, exc, started, ctx, None)
            raise
        self._observed(prepared, None, started, ctx, result)
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
        prepared.run.started = True
        task.add_done_callback(lambda _: prepared.run.over.set())
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
            self._observed(prepared, None, started, ctx, result)
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
                    lambda _: self._observed(prepared, failed, started, ctx, None)
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
        if self.tracer is not None:
            # Read here, in the request's context: a stream's end is observed outside it.
            span = trace.get_current_span().get_span_context()
            if span.is_valid and span.trace_flags.sampled:
                prepared.run.trace_id = format(span.trace_id, "032x")
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
            equivalence=self.equivalence,
            thinking_tags=prepared.deployment.thinking_tags,
            tracer=self.tracer,
            model=prepared.model,
            capture_text=self.capture_text,
        )

    async def _execute(self, prepared: PreparedRequest, ctx: StrategyContext) -> StrategyResult:
        """The strategy's run under the request's deadline."""
        if isinstance(prepared.params, StrategyParams):
            # The budget's clock starts with the run.
            ctx.budget = Allowance.of(prepared.params.budget, ctx.usage, ctx.price)
            # What a key reserved bounds what the verifiers may read.
            ctx.reads = prepared.params.max_spend(prepared.request, self.limits).reads
        name = prepared.strategy.name
        with ctx.span(name, strategy=name, request_id=prepared.request_id) as span:
            run = prepared.strategy.run(prepared.request, prepared.params, ctx)
            result = await within_deadline(run, self.limits.request_timeout_s)
            if span is not None:
                _describe(span, result)
            return result

    def _observed(
        self,
        prepared: PreparedRequest,
        exc: BaseException | None,
        started: float,
        ctx: StrategyContext,
        result: StrategyResult | None,
    ) -> None:
        """`_observe` for a prepared request: its strategy, model and trace."""
        name, model, trace_id = prepared.strategy.name, prepared.model, prepared.run.trace_id
        self._observe(name, model, exc, started, ctx, result, trace_id)

    def _observe(
        self,
        strategy: str,
        model: str,
        exc: BaseException | None,
        started: float,
        ctx: StrategyContext | None = None,
        result: StrategyResult | None = None,
        trace_id: str | None = None,
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
            result=result,
            trace_id=trace_id,
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


def _describe(span: Span, result: StrategyResult) -> None:
    """What the run spent and why it ended, on its span."""
    usage = result.usage
    span.set_attributes(
        {
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "ttc.verifier_tokens": usage.verifier_tokens,
            "ttc.calls": usage.calls,
        }
    )
    if result.stopped_early:
        span.set_attribute("ttc.stopped_early", result.stopped_early)
    if result.fallback:
        span.set_attribute("ttc.fallback", result.fallback)


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
