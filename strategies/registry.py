"""The registered strategies, by the name a request gives in `reasoning_strategy`.

Adding a strategy is one module (see `strategies.base` for the contract) and one line here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from backends.base import ChatPrompt
from strategies.auto import Auto
from strategies.base import (
    InvalidParamsError,
    ParamsContext,
    Strategy,
    StrategyError,
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
from strategies.weighted_vote import WeightedVote

__all__ = [
    "STRATEGIES",
    "TOOL_STRATEGIES",
    "ToolsNotSupported",
    "check_tools",
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


# The strategies that can answer with tool calls: they pass `tools` to the backend and return
# its calls (none, cot) or vote on them. Searches grow text step by step, which a call is not.
TOOL_STRATEGIES = ("none", "cot", "majority_vote", "weighted_vote", "best_of_n")


class ToolsNotSupported(StrategyError):
    """`tools` were given to a strategy that cannot answer with calls."""

    param = "tools"


def check_tools(strategy: Strategy[Any], request: StrategyRequest) -> None:
    """Raise `ToolsNotSupported` (a 400 naming `tools`) if the request offers tools to a
    strategy that cannot answer with calls."""
    prompt = request.prompt
    if not isinstance(prompt, ChatPrompt) or prompt.tools is None:
        return
    if strategy.name not in TOOL_STRATEGIES:
        raise ToolsNotSupported(
            f"reasoning_strategy {strategy.name!r} cannot answer with tool calls; with tools, "
            f"use one of: {', '.join(TOOL_STRATEGIES)}"
        )


def get_strategy(name: str) -> Strategy[Any]:
    """The strategy registered as `name`; `UnknownStrategyError` lists the valid names."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise UnknownStrategyError(name, sorted(STRATEGIES)) from None


def parse_params(
    strategy: Strategy[Any], raw: Mapping[str, Any] | None, context: ParamsContext | None = None
) -> BaseModel:
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
