"""Preparing a request: the checks of its fields, strategy and params, before anything runs.

Every 4xx of a generation request past its parsing comes from here (or from the model lookup
in `server.serving.deployments`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from server.protocol.common import GenerationRequest
from server.serving.deployments import Deployment
from strategies.accounting import ModelPrice, Usage
from strategies.base import StrategyParams, StrategyRequest
from strategies.limits import Limits
from strategies.registry import check_answer_kind, check_thinking, get_strategy, parse_params
from strategies.strategy import Strategy

__all__ = ["PreparedRequest", "RunState", "prepare_request"]

logger = logging.getLogger(__name__)


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
    # The strategy's task, once a stream started it: a key is settled only once it has
    # finished unwinding, so that the calls it had in flight are counted.
    run: RunState = field(default_factory=lambda: RunState())


@dataclass
class RunState:
    """Whether a streamed run started, and an event set once its task is over."""

    started: bool = False
    over: asyncio.Event = field(default_factory=asyncio.Event)
    # The trace the run is sampled into (hex), when it is traced: its latency's exemplar.
    trace_id: str | None = None

    async def unwound(self) -> None:
        """Return once the run is over (at once if it never started)."""
        if self.started:
            await self.over.wait()


def prepare_request(
    body: GenerationRequest,
    request_id: str,
    deployment: Deployment,
    limits: Limits,
    price: ModelPrice | None,
) -> PreparedRequest:
    """Check `body` for the model `deployment` serves (priced at `price`, if at all): its
    fields, the limits, the strategy and its params."""
    body.refuse_unsupported()
    if ignored := body.ignored_fields():
        # Quoted: a client's field name may hold a newline that would forge a log line.
        logger.warning(
            "ignoring unknown request fields: %s", ", ".join(repr(name[:64]) for name in ignored)
        )
    request = body.to_strategy_request(limits)
    strategy = get_strategy(body.reasoning_strategy)
    check_answer_kind(strategy, request)
    context = deployment.params_context
    if price is not None:
        # A `usd` budget is valid only for a priced model.
        context = dataclasses.replace(context, price=price)
    params = parse_params(strategy, body.reasoning_params, context)
    params.check_request(request)
    check_thinking(strategy, params, request)
    return PreparedRequest(
        deployment=deployment,
        strategy=strategy,
        params=params,
        request=request,
        model=body.model,
        request_id=request_id,
        with_trace=params.is_trace_asked,
        include_usage=body.include_usage,
        # Only a stream has somewhere to send progress lines; a plain answer ignores them.
        stream_progress=body.stream and params.is_progress_asked,
    )
