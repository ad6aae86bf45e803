"""The registered strategies, by the name a request gives in `reasoning_strategy`.

Adding a strategy is one module (see `strategies.strategy` for the contract) and one line here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from backends.base import ChatPrompt
from strategies.auto import Auto
from strategies.base import (
    InvalidParamsError,
    ParamsContext,
    StrategyError,
    StrategyParams,
    StrategyRequest,
    UnknownStrategyError,
)
from strategies.beam_search import BeamSearch
from strategies.best_of_n import BestOfN
from strategies.cot import ChainOfThought
from strategies.dvts import DVTS
from strategies.majority_vote import MajorityVote
from strategies.mcts import MCTS
from strategies.none import PlainGeneration
from strategies.particle_filtering import ParticleFiltering
from strategies.strategy import Strategy
from strategies.weighted_vote import WeightedVote

__all__ = [
    "STRATEGIES",
    "JsonNotSupported",
    "ToolsNotSupported",
    "check_answer_kind",
    "check_thinking",
    "get_strategy",
    "parse_params",
]

STRATEGIES: Mapping[str, Strategy[Any]] = {
    strategy.name: strategy
    for strategy in (
        PlainGeneration(),
        ChainOfThought(),
        MajorityVote(),
        WeightedVote(),
        BestOfN(),
        BeamSearch(),
        DVTS(),
        MCTS(),
        ParticleFiltering(),
        Auto(),
    )
}


class ToolsNotSupported(StrategyError):
    """`tools` were given to a strategy that cannot answer with calls."""

    param = "tools"


class JsonNotSupported(InvalidParamsError):
    """`response_format` asks for JSON from a strategy that cannot constrain its answer."""


def check_answer_kind(strategy: Strategy[Any], request: StrategyRequest) -> None:
    """Raise a 400 naming the field if the request asks for tool calls or JSON from a strategy
    that cannot answer so (`Strategy.takes_tools`, `takes_json`)."""
    prompt = request.prompt
    if isinstance(prompt, ChatPrompt) and prompt.tools is not None and not strategy.takes_tools:
        able = ", ".join(name for name, s in STRATEGIES.items() if s.takes_tools)
        raise ToolsNotSupported(
            f"reasoning_strategy {strategy.name!r} cannot answer with tool calls; with tools, "
            f"use one of: {able}"
        )
    if request.sampling.structured is not None and not strategy.takes_json:
        able = ", ".join(name for name, s in STRATEGIES.items() if s.takes_json)
        # A search cuts prefixes at step boundaries and scores them as text: a grammar over
        # the whole answer cannot follow them.
        raise JsonNotSupported(
            f"reasoning_strategy {strategy.name!r} assembles its answer from steps, which a JSON "
            f"grammar cannot constrain; response_format json_object and json_schema are taken "
            f"by {able}",
            param="response_format",
        )


def check_thinking(
    strategy: Strategy[Any], params: StrategyParams, request: StrategyRequest
) -> None:
    """Raise a 400 naming the field if the request controls thinking (`reasoning_params.thinking`
    or `thinking_token_budget`) for a strategy that does not apply it (`takes_thinking`), or
    leaves the answer no room after the thinking."""
    thinking = params.thinking_of(request)
    if thinking is None:
        return
    param = "reasoning_params.thinking" if params.thinking else "thinking_token_budget"
    if not strategy.takes_thinking:
        able = ", ".join(name for name, s in STRATEGIES.items() if s.takes_thinking)
        raise InvalidParamsError(
            f"reasoning_strategy {strategy.name!r} does not control a model's thinking (a "
            "search steps through the answer text, not the thinking; cot asks for its "
            f"reasoning in the answer); thinking controls are taken by {able}",
            param=param,
        )
    if (thinking.min_tokens or 0) >= request.sampling.max_tokens:
        raise InvalidParamsError(
            f"thinking.min_tokens ({thinking.min_tokens}) must be below max_tokens "
            f"({request.sampling.max_tokens}), which bounds the thinking and the answer together",
            param="reasoning_params.thinking.min_tokens",
        )
    if thinking.max_tokens is not None and thinking.max_tokens >= request.sampling.max_tokens:
        raise InvalidParamsError(
            f"the thinking budget ({thinking.max_tokens}) must be below max_tokens "
            f"({request.sampling.max_tokens}), which bounds the thinking and the answer "
            "together",
            param=param,
        )


def get_strategy(name: str) -> Strategy[Any]:
    """The strategy registered as `name`; `UnknownStrategyError` lists the valid names."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise UnknownStrategyError(name, sorted(STRATEGIES)) from None


def parse_params(
    strategy: Strategy[Any], raw: Mapping[str, Any] | None, context: ParamsContext | None = None
) -> StrategyParams:
    """Validate `reasoning_params` with the strategy's own model; errors name the field.

    Validated as the JSON they came as, strictly: `"n": "4"` is an error, not 4, as in the
    request's own fields, while enum names and lists for tuples are read as JSON gives them.
    """
    try:
        return strategy.params_model.model_validate_json(
            json.dumps(raw or {}), strict=True, context=context or ParamsContext()
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        param = f"reasoning_params.{where}" if where else "reasoning_params"
        raise InvalidParamsError(
            f"Invalid {param} for strategy {strategy.name!r}: {first['msg']}", param=param
        ) from exc
