"""Test-time compute strategies, one module per algorithm, chosen by name."""

from strategies.base import (
    Budget,
    Choice,
    ChoiceDelta,
    InvalidParamsError,
    Strategy,
    StrategyContext,
    StrategyError,
    StrategyRequest,
    StrategyResult,
    UnknownStrategyError,
    Usage,
)
from strategies.registry import STRATEGIES, get_strategy, parse_params

__all__ = [
    "STRATEGIES",
    "Budget",
    "Choice",
    "ChoiceDelta",
    "InvalidParamsError",
    "Strategy",
    "StrategyContext",
    "StrategyError",
    "StrategyRequest",
    "StrategyResult",
    "UnknownStrategyError",
    "Usage",
    "get_strategy",
    "parse_params",
]
