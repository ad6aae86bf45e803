"""The `Strategy` protocol: what the registry holds and the server runs.

It sits above `strategies.base` (the request, params and result types) and `strategies.context`
(what a run may touch), so that neither of those imports the other's dependants.
"""

from __future__ import annotations

from typing import ClassVar, Generic, Protocol, TypeVar

from strategies.base import StrategyParams, StrategyRequest, StrategyResult
from strategies.context import StrategyContext

__all__ = ["Strategy"]

P_contra = TypeVar("P_contra", bound=StrategyParams, contravariant=True)


class Strategy(Protocol, Generic[P_contra]):
    """A test-time compute algorithm, registered under `name`.

    `takes_tools`: it can answer with tool calls (it passes `tools` to the backend and returns
    or votes on its calls); `takes_json`: it can answer under `response_format`'s JSON grammar;
    `takes_thinking`: it applies `reasoning_params.thinking` (and `thinking_token_budget`) to
    each candidate it samples. A request that asks a strategy for what it cannot take is a 400
    naming the field.
    """

    name: ClassVar[str]
    params_model: ClassVar[type[StrategyParams]]
    takes_tools: ClassVar[bool]
    takes_json: ClassVar[bool]
    takes_thinking: ClassVar[bool]

    async def run(
        self, request: StrategyRequest, params: P_contra, ctx: StrategyContext
    ) -> StrategyResult:
        """Answer `request`, calling the model only through `ctx`."""
        ...
