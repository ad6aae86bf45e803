"""Wire models the generation endpoints share: the base model, usage, our response extensions,
and the sampling fields both requests take.

Requests convert themselves into a `StrategyRequest`, so serving code never reads raw dicts.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backends.base import SamplingParams, StructuredOutput
from server.protocol.errors import InvalidRequest
from server.protocol.vllm_fields import (
    APPLIED,
    FORWARDED,
    REFUSED,
    forwarded_fields,
    refuse_unsupported,
)
from strategies.base import ReasoningEffort, StrategyRequest
from strategies.limits import Limits

__all__ = [
    "EFFORT_MAX_TOKENS",
    "CompletionTokensDetails",
    "GenerationRequest",
    "JSONSchemaFormat",
    "OpenAIBaseModel",
    "ReasoningExtensions",
    "ResponseFormat",
    "StreamOptions",
    "UsageInfo",
    "effort_kwargs",
    "text_of",
]


def text_of(parts: Sequence[tuple[str, str | None]], text_types: Sequence[str], param: str) -> str:
    """The text of a multi-part content given as `(type, text)` pairs, joined; any part not of
    `text_types` (an image, audio, a file) is a 400 naming it, as `param.<index>`."""
    for index, (kind, _) in enumerate(parts):
        if kind not in text_types:
            raise InvalidRequest(
                f"{param}.{index} is a part of type {kind!r}, but this model takes text only; "
                f"send {' or '.join(repr(t) for t in text_types)} parts",
                f"{param}.{index}",
            )
    return "".join(text or "" for _, text in parts)


def effort_kwargs(effort: ReasoningEffort | None) -> dict[str, Any]:
    """What a `reasoning_effort` sets among a chat template's arguments, as vLLM sets it: the
    effort, and `enable_thinking` unless it is `none` (for templates that ask to think)."""
    if effort is None:
        return {}
    return {"reasoning_effort": effort, "enable_thinking": effort != "none"}


# Every field of vLLM's requests this server knows what to do with.
_KNOWN = APPLIED | FORWARDED | frozenset(REFUSED)

# Token ids are 32-bit: at most 10 digits.
_TOKEN_ID_DIGITS = 10


class OpenAIBaseModel(BaseModel):
    """Accepts fields it does not know, as OpenAI's API does, so newer clients keep working.

    An explicit `null` means "the default", as in OpenAI's API (some clients send every field).
    Types are strict, as OpenAI's are: `"n": "2"`, `"stream": "yes"` or `"logprobs": 1` is a 400
    naming the field, not a guess (an integer is still a number where a float is expected).
    """

    model_config = ConfigDict(extra="allow", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        defaulted = {
            name
            for name, info in cls.model_fields.items()
            if not info.is_required() and info.get_default(call_default_factory=True) is not None
        }
        return {k: v for k, v in data.items() if not (v is None and k in defaulted)}


class CompletionTokensDetails(BaseModel):
    """How completion tokens split; `reasoning_tokens` are those not in any returned content."""

    reasoning_tokens: int = 0


class UsageInfo(BaseModel):
    """Token counts reported by the model servers, summed over every call of the request.

    `prompt_tokens`, `completion_tokens` and `total_tokens` are the generator's, as OpenAI's;
    `verifier_tokens` (our extension) counts every token verifiers processed (reward-model
    inputs, judge prompts and answers), so generator and verifier cost can be priced apart.
    """

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails
    verifier_tokens: int = 0


class ReasoningExtensions(BaseModel):
    """Our top-level response fields; each is left out of the body when it is None."""

    reasoning_trace: dict[str, Any] | None = Field(
        default=None, description="The strategy's trace, present only when asked for."
    )
    reasoning_fallback: str | None = Field(
        default=None, description="Set when a verifier failed and another strategy answered."
    )
    reasoning_stopped_early: str | None = Field(
        default=None,
        description="Why the strategy answered before spending all it was asked to: a settled "
        "vote, a budget, a search's limits.",
    )


class StreamOptions(OpenAIBaseModel):
    """`stream_options`."""

    include_usage: bool = False


# The token budget `reasoning_effort` gives a request that sets no max_tokens of its own.
EFFORT_MAX_TOKENS: dict[str, int] = {
    "none": 256,
    "minimal": 256,
    "low": 256,
    "medium": 1024,
    "high": 4096,
    "xhigh": 8192,
    "max": 16384,
}


class JSONSchemaFormat(OpenAIBaseModel):
    """`response_format.json_schema`: the schema the answer must be valid for."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    # `schema` on the wire; the attribute name would shadow pydantic's own.
    json_schema: dict[str, Any] = Field(default_factory=dict, alias="schema")
    # Accepted for clients that send it: the schema is always enforced while decoding.
    strict: bool | None = None


class ResponseFormat(OpenAIBaseModel):
    """`response_format`: free text, any JSON object, or JSON valid for a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_for_json_schema(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs a json_schema object")
        return self

    def structured(self) -> StructuredOutput | None:
        """The constraint the backends enforce; None for free text."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return StructuredOutput()
        assert self.json_schema is not None
        # An empty schema allows any JSON value; vLLM reads it the same way.
        return StructuredOutput(json_schema=self.json_schema.json_schema)


class GenerationRequest(OpenAIBaseModel):
    """Fields both generation endpoints share, in OpenAI's order, then ours (vLLM's sampling
    extensions first, then the strategy fields)."""

    model: str
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    n: int = Field(default=1, ge=1)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    response_format: ResponseFormat | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    user: str | None = None

    top_k: int = Field(
        default=0, ge=-1, description="vLLM's: keep the k likeliest tokens; 0 or -1: all."
    )
    min_p: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="vLLM's: drop tokens below min_p x the top one's probability.",
    )
    repetition_penalty: float = Field(
        default=1.0,
        gt=0.0,
        le=2.0,
        description="vLLM's: >1 discourages tokens of the prompt and output.",
    )
    stop_token_ids: list[int] | None = Field(
        default=None, description="vLLM's: token ids that end a sequence, as stop strings do."
    )

    reasoning_effort: ReasoningEffort | None = Field(
        default=None,
        description="OpenAI's effort level: forwarded to the model (its chat template, as vLLM "
        "passes it), and the default n and max_tokens of the strategies.",
    )
    thinking_token_budget: int | None = Field(
        default=None,
        ge=0,
        description="vLLM's: the most tokens each candidate may think; the server closes the "
        "thinking there and the model answers (reasoning_params.thinking has more).",
    )
    reasoning_strategy: str = Field(
        default="none", description="Which test-time compute strategy answers the request."
    )
    reasoning_params: dict[str, Any] | None = Field(
        default=None, description="Parameters of the chosen strategy, validated by it."
    )

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> GenerationRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    @abstractmethod
    def to_strategy_request(self, limits: Limits) -> StrategyRequest:
        """Validate against the server's limits and convert for the strategies."""

    def refuse_unsupported(self) -> None:
        """A 400 naming a field set to something this server cannot honour (it would change
        the answer); `server.protocol.vllm_fields` says which and why."""
        refuse_unsupported(self.model_extra or {})

    def ignored_fields(self) -> list[str]:
        """Fields neither vLLM nor this server knows, left alone as vLLM does; worth a log
        line."""
        return sorted(name for name in self.model_extra or () if name not in _KNOWN)

    def forwarded(self) -> dict[str, Any]:
        """The vLLM fields every backend call forwards as they are, `reasoning_effort` among
        them."""
        fields = forwarded_fields(self.model_extra or {})
        if self.reasoning_effort is not None:
            fields["reasoning_effort"] = self.reasoning_effort
        return fields

    def _stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if any(not s for s in stops):
            raise InvalidRequest("stop strings must not be empty", "stop")
        return stops

    def _logit_bias(self) -> tuple[tuple[int, float], ...]:
        bias: list[tuple[int, float]] = []
        for key, value in (self.logit_bias or {}).items():
            # ASCII digits only (`int` would read "²" and choke on thousands of digits), and no
            # more than a token id can have.
            if not (key.isascii() and key.isdigit() and len(key) <= _TOKEN_ID_DIGITS):
                raise InvalidRequest(
                    f"logit_bias keys are token ids; got {key[:32]!r}", "logit_bias"
                )
            if not -100.0 <= value <= 100.0:
                raise InvalidRequest(
                    f"logit_bias values lie in [-100, 100]; got {value} for {key}", "logit_bias"
                )
            bias.append((int(key), value))
        return tuple(bias)

    def _sampling(self, max_tokens: int, limits: Limits, logprobs: int | None) -> SamplingParams:
        limits.check("n", self.n)
        limits.check("max_tokens", max_tokens)
        if any(i < 0 for i in self.stop_token_ids or ()):
            raise InvalidRequest("stop_token_ids are token ids, 0 or more", "stop_token_ids")
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            n=self.n,
            stop=self._stops(),
            seed=self.seed,
            logprobs=logprobs,
            structured=self.response_format.structured() if self.response_format else None,
            top_k=max(0, self.top_k),
            min_p=self.min_p,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            repetition_penalty=self.repetition_penalty,
            logit_bias=self._logit_bias(),
            stop_token_ids=tuple(self.stop_token_ids or ()),
            forwarded=self.forwarded(),
        )

    def _default_max_tokens(self, default: int, limits: Limits) -> int:
        if self.reasoning_effort is None:
            return default
        return min(EFFORT_MAX_TOKENS[self.reasoning_effort], limits.max_tokens)

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage
