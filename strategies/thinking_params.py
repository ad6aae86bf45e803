"""`reasoning_params.thinking`, which every strategy that samples candidates takes, and how a
model delimits its thinking; `strategies.thinking` applies them."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DEFAULT_TAGS", "Probe", "Thinking", "ThinkingTags"]


@dataclass(frozen=True)
class ThinkingTags:
    """How a model delimits its thinking; `opened_by_template` when its chat template opens the
    block itself (DeepSeek-R1's distills), so that its output starts inside it;
    `native_budget` when the model server enforces `thinking_token_budget` itself."""

    open: str = "<think>"
    close: str = "</think>"
    opened_by_template: bool = False
    native_budget: bool = False


# The common defaults (DeepSeek-R1, Qwen3 and most reasoning models).
DEFAULT_TAGS = ThinkingTags()


class Probe(BaseModel):
    """`reasoning_params.thinking.probe`: early exit once the answer is settled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: int = Field(default=64, ge=8, description="Thinking tokens between two probes.")
    agree: int = Field(
        default=3, ge=2, le=10, description="Consecutive probes that must give one answer."
    )
    max_tokens: int = Field(default=16, ge=1, le=64, description="Tokens a probe may write.")


class Thinking(BaseModel):
    """`reasoning_params.thinking`: how each candidate may think (every sampling strategy and
    `none`). vLLM's top-level `thinking_token_budget` is its `max_tokens`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int | None = Field(
        default=None, ge=0, description="Thinking tokens per candidate; then it must answer."
    )
    min_tokens: int | None = Field(
        default=None, ge=1, description="Thinking tokens before an end of thinking is let be."
    )
    probe: Probe | None = Field(default=None, description="Stop thinking once probes agree.")

    @model_validator(mode="after")
    def _min_below_max(self) -> Thinking:
        if self.min_tokens and self.max_tokens and self.min_tokens > self.max_tokens:
            raise ValueError("thinking.min_tokens must not exceed thinking.max_tokens")
        return self

    @property
    def is_budget_only(self) -> bool:
        """A cap and nothing else: what vLLM's own `thinking_token_budget` does alike."""
        return self.max_tokens is not None and not self.min_tokens and self.probe is None

    def probe_tokens(self, max_tokens: int) -> int:
        """The most tokens probes may write for one candidate of `max_tokens`."""
        if self.probe is None:
            return 0
        thinking = min(self.max_tokens or max_tokens, max_tokens)
        return (thinking // self.probe.interval + 1) * self.probe.max_tokens
