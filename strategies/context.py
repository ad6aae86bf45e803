"""`StrategyContext`: everything one run may touch, and the counting path to every model call.

Every call goes through the context, which adds the token counts the backend or verifier
reported to the request's usage and times it for the metrics, so no strategy can forget a call.
Where the request is traced (`tracer`), each call is a client span (OpenTelemetry's GenAI
conventions for model calls), and `span` lets a strategy group its calls (a wave, a step).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.trace import Span, SpanKind, Tracer

from backends.base import (
    BackendSession,
    ChatPrompt,
    Generation,
    Prompt,
    SamplingParams,
    StreamDelta,
    TextPrompt,
)
from strategies.accounting import CallStats, ModelPrice, Usage, outcome_of
from strategies.base import ChoiceDelta, EventSink, Progress, estimated_tokens
from strategies.budget import Allowance, ReadRefused
from strategies.limits import Limits
from strategies.streams import Arrived, DeltaHandler, collect, collect_until
from strategies.thinking_params import ThinkingTags
from verifiers.base import Candidate, CandidateScore, Verifier, VerifierError
from verifiers.equivalence import EquivalencePool

__all__ = ["StrategyContext"]


@dataclass
class StrategyContext:
    """One run's backend session, verifiers, limits and deadline, and what it has spent.

    `deadline` is on the running loop's clock; `sink` receives a streaming client's text;
    `budget` is what the request's `reasoning_params.budget` allows (unlimited by default), and
    `price` the model's price, where the server has one. `is_progress_asked`: the request asked
    for progress lines (`reasoning_params.stream_progress`). `equivalence` compares answers
    with math-verify in killable workers (the app's); without it, answers group by their
    normalised text and numeric value only. `reads` is the most tokens verifiers may read in
    the run, as its strategy declared (`MaxSpend.reads`; None: no bound but the budget's).
    `thinking_tags` are how the model delimits its thinking (`strategies.thinking`).
    `tracer` traces the run's calls (None: not traced), on spans named for `model`; prompts
    and completions go on them only with `capture_text`.
    """

    backend: BackendSession
    request_id: str
    verifiers: Mapping[str, Verifier] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    deadline: float | None = None
    sink: EventSink | None = None
    usage: Usage = field(default_factory=Usage)
    stats: CallStats = field(default_factory=CallStats)
    price: ModelPrice | None = None
    is_progress_asked: bool = False
    equivalence: EquivalencePool | None = None
    reads: int | None = None
    thinking_tags: ThinkingTags = field(default_factory=ThinkingTags)
    tracer: Tracer | None = None
    model: str = ""
    capture_text: bool = False
    budget: Allowance = field(init=False)

    def __post_init__(self) -> None:
        self.budget = Allowance(self.usage, self.price)

    @property
    def is_streaming(self) -> bool:
        """Whether the client reads the answer as it is produced."""
        return self.sink is not None

    async def emit(self, delta: ChoiceDelta) -> None:
        """Send new text to a streaming client; a no-op otherwise."""
        if self.sink is not None:
            await self.sink(delta)

    @property
    def is_reporting_progress(self) -> bool:
        """Whether `progress` lines reach the client: it streams and asked for them. Worth
        checking before composing a line that costs something to compute."""
        return self.is_progress_asked and self.sink is not None

    async def progress(self, line: str) -> None:
        """Tell a streaming client that asked how the run is going: `line` (a newline is added)
        goes out as reasoning text of the first choice; a no-op otherwise."""
        if self.is_progress_asked and self.sink is not None:
            await self.sink(Progress(0, reasoning=line + "\n"))

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        """Sample `params.n` completions and count their tokens; a call cut off (cancelled or
        timed out) is counted as `unreported_tokens`, at the most it could have generated."""
        with self._call_span(prompt, params) as span:
            with self.stats.backend_call(), self._counted_if_cut(params, None):
                generation = await self.backend.generate(prompt, params)
            return self._counted(generation, span)

    async def generate_streamed(
        self, prompt: Prompt, params: SamplingParams, on_delta: DeltaHandler
    ) -> Generation:
        """Sample as `generate` does, handing each piece of text to `on_delta` as it arrives;
        a stream cut off is counted by the tokens that arrived."""
        arrived = Arrived()

        async def seen(delta: StreamDelta) -> None:
            arrived.add(delta)
            await on_delta(delta)

        with self._call_span(prompt, params) as span:
            with self.stats.backend_call(), self._counted_if_cut(params, arrived):
                generation = await collect(self.backend.stream(prompt, params), params, seen)
            return self._counted(generation, span)

    async def generate_until(
        self,
        prompt: Prompt,
        params: SamplingParams,
        stop: Callable[[StreamDelta], bool],
        prompt_tokens: int,
    ) -> tuple[Generation, bool]:
        """Stream one completion, closing the stream (and so the backend's request) as soon as
        `stop` says so; whether it did, and what arrived until then is counted
        (`strategies.streams.collect_until`)."""
        arrived = Arrived()

        def seen(delta: StreamDelta) -> bool:
            arrived.add(delta)
            return stop(delta)

        with self._call_span(prompt, params) as span:
            with self.stats.backend_call(), self._counted_if_cut(params, arrived):
                stream = self.backend.stream(prompt, params)
                generation, cut = await collect_until(stream, params, seen, prompt_tokens)
            if span is not None:
                span.set_attribute("ttc.stream_closed_early", cut)
            return self._counted(generation, span), cut

    def _counted(self, generation: Generation, span: Span | None = None) -> Generation:
        self.stats.generated(generation)
        self.usage.add_generation(generation)
        if span is not None:
            completions = generation.completions
            span.set_attributes(
                {
                    "gen_ai.usage.input_tokens": generation.prompt_tokens,
                    "gen_ai.usage.output_tokens": generation.completion_tokens,
                    "gen_ai.response.finish_reasons": [c.finish_reason for c in completions],
                }
            )
            if self.capture_text:
                texts = [c.text for c in completions]
                span.set_attribute("gen_ai.output.messages", orjson.dumps(texts).decode())
        return generation

    def span(self, name: str, **attributes: Any) -> contextlib.AbstractContextManager[Span | None]:
        """A span around part of the run (a wave, a step), its attributes as `ttc.<name>`;
        nothing where the request is not traced."""
        if self.tracer is None:
            return _UNTRACED
        return self.tracer.start_as_current_span(
            name, attributes={f"ttc.{k}": v for k, v in attributes.items()}
        )

    def _call_span(
        self, prompt: Prompt, params: SamplingParams
    ) -> contextlib.AbstractContextManager[Span | None]:
        """A model call's client span, by OpenTelemetry's GenAI conventions; its `traceparent`
        goes with the call (`backends.vllm_client`)."""
        if self.tracer is None:
            return _UNTRACED
        operation = "chat" if isinstance(prompt, ChatPrompt) else "text_completion"
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": self.model,
            "gen_ai.request.max_tokens": params.max_tokens,
            "gen_ai.request.temperature": params.temperature,
            "gen_ai.request.choice.count": params.n,
        }
        if params.seed is not None:
            attributes["gen_ai.request.seed"] = params.seed
        if self.capture_text:
            attributes["gen_ai.input.messages"] = _prompt_text(prompt)
        return self.tracer.start_as_current_span(
            f"{operation} {self.model}", kind=SpanKind.CLIENT, attributes=attributes
        )

    @contextlib.contextmanager
    def _counted_if_cut(self, params: SamplingParams, arrived: Arrived | None) -> Iterator[None]:
        """Count a call that ends without its usage: a stream by what `arrived`; a plain call
        cancelled or timed out (its backend may have generated up to its limit) as unreported
        tokens, which keys are charged. A call that failed otherwise generated nothing."""
        try:
            yield
        except BaseException as exc:
            if arrived is not None:
                self.usage.add_call(arrived.prompt_tokens, arrived.tokens)
            elif outcome_of(exc) in ("cancelled", "timeout"):
                self.usage.unreported_tokens += params.n * params.max_tokens
            raise

    async def verify(
        self, name: str, question: str, candidates: Sequence[Candidate]
    ) -> tuple[CandidateScore, ...]:
        """Score candidates with the verifier configured as `name`; its tokens are counted.

        What the call will read (the question and each candidate, by their token counts where
        known, else by `estimated_tokens`) is checked first against what the run may still
        read, its budget's and its declared `reads`: past either, `ReadRefused` and no call.
        A call cut off (cancelled, or past its timeout) reports no tokens, though the model
        server read them: it is charged that estimate, as unreported tokens."""
        reading = self._reading(question, candidates)
        self._check_reading(name, reading)
        with self._verifier_span(name, len(candidates)) as span:
            try:
                with self.stats.verifier_call(name):
                    scores = await self.verifiers[name].score(question, candidates)
            except BaseException as exc:
                if outcome_of(_cause(exc)) in ("cancelled", "timeout"):
                    self.usage.unreported_tokens += reading
                raise
            if len(scores.candidates) != len(candidates):
                raise VerifierError(
                    f"verifier {name!r} returned {len(scores.candidates)} scores "
                    f"for {len(candidates)} candidates"
                )
            self.usage.verifier_tokens += scores.tokens
            self.stats.scored(name, scores.candidates)
            if span is not None:
                span.set_attributes(
                    {
                        "ttc.verifier.tokens": scores.tokens,
                        "ttc.verifier.scores": [c.value for c in scores.candidates],
                    }
                )
            return scores.candidates

    def _verifier_span(
        self, name: str, candidates: int
    ) -> contextlib.AbstractContextManager[Span | None]:
        if self.tracer is None:
            return _UNTRACED
        return self.tracer.start_as_current_span(
            f"verify {name}",
            kind=SpanKind.CLIENT,
            attributes={"ttc.verifier.name": name, "ttc.verifier.candidates": candidates},
        )

    @staticmethod
    def _reading(question: str, candidates: Sequence[Candidate]) -> int:
        asked = estimated_tokens(len(question))
        return sum(
            asked + (c.tokens if c.tokens is not None else estimated_tokens(len(c.text)))
            for c in candidates
        )

    def _check_reading(self, name: str, reading: int) -> None:
        left = self.budget.reading_left()
        if left is not None and reading > left:
            raise ReadRefused(
                f"token budget reached: verifier {name!r} not called, as it would read about "
                f"{reading} tokens and {left} are left"
            )
        if self.reads is not None and self.usage.verifier_tokens + reading > self.reads:
            raise ReadRefused(
                f"verifier reading reached: {name!r} not called, as it would read about "
                f"{reading} tokens, past the {self.reads} the request reserved for it "
                f"({self.usage.verifier_tokens} read so far)"
            )

    async def count_tokens(self, text: str) -> int:
        """How many tokens `text` is in the backend's tokenizer."""
        return await self.backend.count_tokens(text)


# What an untraced run's spans are: nothing, and the same nothing every time.
_UNTRACED: contextlib.nullcontext[None] = contextlib.nullcontext()


def _prompt_text(prompt: Prompt) -> str:
    """A prompt as a span shows it: the messages as JSON, or the raw text."""
    if isinstance(prompt, ChatPrompt):
        messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
        return orjson.dumps(messages).decode()
    if isinstance(prompt, TextPrompt):
        return prompt.text
    return orjson.dumps(list(prompt.ids)).decode()


def _cause(exc: BaseException) -> BaseException:
    """A verifier's timeout arrives as the `VerifierError` its guard raised from it."""
    return exc.__cause__ if isinstance(exc, VerifierError) and exc.__cause__ else exc
