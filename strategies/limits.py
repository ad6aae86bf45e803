"""What a request may ask for: the server's ceilings and defaults, and the one check against them.

`Limits` is what strategies read of the server's `--limits.*` settings group (the server adds
its admission settings to it). Every ceiling a request or its `reasoning_params` can run into is
checked by `Limits.check`, so each says the same thing.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from backends.errors import GatewayError

__all__ = ["CEILINGS", "LimitExceeded", "Limits"]

# The request fields the server limits, and the `Limits` field that holds each one's ceiling.
CEILINGS = {
    "n": "max_n",
    "max_tokens": "max_tokens",
    "max_search_tokens": "search_max_tokens",
    "max_search_seconds": "search_max_seconds",
}


class LimitExceeded(GatewayError, ValueError):
    """A request (or one of its params) asks for more than the server allows."""

    def __init__(self, param: str, value: float, ceiling: float) -> None:
        super().__init__(
            f"{param} is {_number(value)}; this server allows at most {_number(ceiling)}"
        )
        self.param = param


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


class Limits(BaseModel):
    """Per-request ceilings checked at the edge, and defaults for fields a request leaves out."""

    max_n: int = Field(default=64, ge=1, description="Largest `n` a request may ask for.")
    max_tokens: int = Field(default=4096, ge=1, description="Largest `max_tokens` per request.")
    default_max_tokens: int = Field(
        default=512, ge=1, description="`max_tokens` used when a request does not set it."
    )
    request_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Deadline for a whole request; past it the client gets 504.",
    )

    search_default_tokens: int = Field(
        default=8192, ge=1, description="Tokens a search may generate when its params don't say."
    )
    search_max_tokens: int = Field(
        default=65536, ge=1, description="Most tokens one search may be allowed to generate."
    )
    search_default_seconds: float = Field(
        default=120.0, gt=0, description="Time a search may take when its params don't say."
    )
    search_max_seconds: float = Field(
        default=540.0, gt=0, description="Most time one search may be allowed."
    )

    @model_validator(mode="after")
    def _default_within_ceiling(self) -> Limits:
        if self.default_max_tokens > self.max_tokens:
            raise ValueError("default_max_tokens must not exceed max_tokens")
        if self.search_default_tokens > self.search_max_tokens:
            raise ValueError("search_default_tokens must not exceed search_max_tokens")
        if self.search_default_seconds > self.search_max_seconds:
            raise ValueError("search_default_seconds must not exceed search_max_seconds")
        return self

    def check(self, param: str, value: float) -> None:
        """Raise `LimitExceeded` when the field `param` (one of `CEILINGS`, as requests and
        strategy params name them) asks for more than its ceiling."""
        ceiling: float = getattr(self, CEILINGS[param])
        if value > ceiling:
            raise LimitExceeded(param, value, ceiling)
