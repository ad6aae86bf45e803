"""The embedded backend: SmolLM2 on the CPU build of torch, inside the gateway's process.

The model runs on one thread of its own, so the event loop (health checks, other requests,
streams) stays responsive while it works. That thread advances every running request one token
per step (`backends.embedded_scheduler`), the rows of all of them (a request's `n` samples and
every other request's) in one batched forward pass, so a short request is not queued behind a
long one (`backends.embedded_batch.DecodeBatch`). Requests in the engine are bounded (a full
queue is a 503, never a silent drop).

Tools are written into the prompt and calls parsed back out of the text in the Hermes-style
format of `backends.tool_calls` (SmolLM2's template has no tools section); a forced
`tool_choice` is enforced through `SamplingParams.structured`.

`response_format` is enforced while decoding with a grammar (`backends.embedded_grammar`),
compiled per schema in a worker thread before the request joins the batch; the sampling
transforms (`top_k`, `min_p`, penalties, `logit_bias`) are in `backends.embedded_sampling`.

This module and the engine's import torch; `backends.registry` imports them only when the
embedded backend is built, and its settings are in `backends.embedded_settings`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from backends.embedded_decoding import DeltaSink, eos_ids
from backends.embedded_grammar import ENGINE_MISSING, Grammars, is_engine_installed
from backends.embedded_model import LoadedModel
from backends.embedded_scheduler import ModelScheduler
from backends.embedded_settings import EmbeddedBackendSettings, EmbeddedSettings
from backends.embedded_tokens import score_prompt, tokenizer_info
from backends.errors import BackendResponseError, BackendUnavailable
from backends.prompts import (
    ChatPrompt,
    Prompt,
    SamplingParams,
    StructuredOutput,
    TextPrompt,
    TokenPrompt,
    Tools,
)
from backends.results import (
    Completion,
    Echo,
    FinishReason,
    Generation,
    PromptLogprobs,
    StreamDelta,
    StreamEnd,
    StreamEvent,
    Tokenized,
)
from backends.smollm2 import MODEL_NAME
from backends.tool_calls import HeldText, call_deltas, forced_schema, parse_calls
from backends.vllm_client import HTTPClients

__all__ = ["EmbeddedBackend"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class EmbeddedBackend:
    """The in-process CPU model behind the `Backend` protocol."""

    def __init__(self, model: LoadedModel, max_queue: int) -> None:
        self._model = model
        self._max_queue = max_queue
        self._pending = 0
        self._scheduler = ModelScheduler(model.batch())
        # Made on the first structured request: nothing else pays for it.
        self._grammars: Grammars | None = None

    @classmethod
    async def create(
        cls, settings: EmbeddedBackendSettings, clients: HTTPClients
    ) -> EmbeddedBackend:
        """Convert (first time only) and load the model off the event loop; it needs no client."""
        return await cls.load(settings.embedded)

    @classmethod
    async def load(cls, settings: EmbeddedSettings) -> EmbeddedBackend:
        """Convert (first time only) and load the model off the event loop."""
        model = await asyncio.to_thread(LoadedModel.load, settings)
        logger.info("embedded model %s loaded in %s", MODEL_NAME, model.dtype)
        if not is_engine_installed():
            # Said once here, and again to every request that needs it (a 501 naming it).
            logger.error("%s; such requests are refused until it is", ENGINE_MISSING)
        return cls(model, settings.max_queue)

    async def model_name(self) -> str:
        return MODEL_NAME

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        tools = _offered(prompt)
        if tools is None:
            return await self._submit(prompt, params, None)
        generation = await self._submit(prompt, _forced(params, tools), None)
        completions = tuple(_with_calls(c, tools) for c in generation.completions)
        return replace(generation, completions=completions)

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamEvent]:
        tools = _offered(prompt)
        if tools is None:
            async for event in self._stream(prompt, params):
                yield event
            return
        # Text streams until a call may begin; the calls go out whole once the model is done.
        held = [HeldText(tools) for _ in range(params.n)]
        texts = [""] * params.n
        # The counts of deltas held back go with the next one passed on.
        unsaid, prompt_tokens = [0] * params.n, 0
        async for event in self._stream(prompt, _forced(params, tools)):
            if isinstance(event, StreamDelta):
                i = event.index
                texts[i] += event.text
                shown = held[i].feed(event.text)
                unsaid[i] += event.tokens
                prompt_tokens += event.prompt_tokens
                if shown or event.logprobs:
                    yield replace(event, text=shown, tokens=unsaid[i], prompt_tokens=prompt_tokens)
                    unsaid[i], prompt_tokens = 0, 0
                continue
            finish = list(event.finish_reasons)
            for i, text in enumerate(texts):
                parsed = parse_calls(text, tools, finish[i])
                if parsed.calls:
                    yield StreamDelta(i, "", tool_calls=call_deltas(parsed.calls))
                elif held[i].held:
                    yield StreamDelta(i, held[i].held)
                finish[i] = parsed.finish_reason
            yield replace(event, finish_reasons=tuple(finish))

    async def _stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamEvent]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[StreamEvent | None] = asyncio.Queue()

        def sink(event: StreamEvent) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        job = asyncio.ensure_future(self._submit(prompt, params, sink))
        # The job finishes after the worker's last call_soon_threadsafe, so this sentinel is
        # queued behind every delta.
        job.add_done_callback(lambda _: events.put_nowait(None))
        try:
            while (event := await events.get()) is not None:
                yield event
            yield StreamEnd.of(job.result())
        finally:
            job.cancel()

    async def prompt_logprobs(self, prompt: Prompt, continuation: str) -> PromptLogprobs:
        return await self._run(lambda: self._model.prompt_logprobs(prompt, continuation), None)

    async def render(self, prompt: Prompt) -> str:
        # Rendering a template takes microseconds: no need to queue behind generation.
        return self._model.render(prompt)

    async def count_tokens(self, text: str) -> int:
        return self._model.count_tokens(text)

    def session(
        self, request_id: str | None = None, deadline: float | None = None
    ) -> EmbeddedBackend:
        return self

    async def check_ready(self) -> None:
        return None

    async def aclose(self) -> None:
        # Joins the model thread, which may be in the middle of a step: off the event loop.
        await asyncio.to_thread(self._scheduler.close)

    async def echo(self, prompt: TextPrompt | TokenPrompt, params: SamplingParams) -> Echo:
        model = self._model
        ids = model.encode(prompt)
        model.check_length(len(ids), params.max_tokens)
        text, tokens, greedy = await self._run(
            lambda: score_prompt(model.model, model.tokenizer, ids, params.logprobs or 0), None
        )
        if params.max_tokens == 1 and params.temperature < 1e-5 and not params.stop:
            # What lm-eval asks: the scoring pass already holds the one greedy token.
            logprobs = (greedy,) if params.logprobs is not None else None
            finish: FinishReason = "stop" if greedy.token == model.tokenizer.eos_token else "length"
            one = Completion(greedy.token, finish, 1, logprobs)
            generation = Generation((one,) * params.n, prompt_tokens=len(ids))
        elif params.max_tokens:
            generation = await self._submit(TokenPrompt(tuple(ids)), params, None)
        else:
            empty = Completion.empty(params.logprobs is not None)
            generation = Generation((empty,) * params.n, prompt_tokens=len(ids))
        return Echo(text, tokens, generation)

    async def tokenize(
        self, prompt: TextPrompt | ChatPrompt, add_special_tokens: bool, with_strings: bool
    ) -> Tokenized:
        ids = self._model.encode(prompt, add_special_tokens)
        tokenizer = self._model.tokenizer
        strings = tuple(tokenizer.convert_ids_to_tokens(ids)) if with_strings else None
        return Tokenized(tuple(ids), self._model.max_len, strings)

    async def detokenize(self, ids: Sequence[int]) -> str:
        text: str = self._model.tokenizer.decode(list(ids))
        return text

    async def tokenizer_info(self) -> dict[str, Any]:
        return tokenizer_info(self._model.tokenizer)

    async def _submit(
        self, prompt: Prompt | TokenPrompt, params: SamplingParams, sink: DeltaSink | None
    ) -> Generation:
        if isinstance(prompt, ChatPrompt) and not prompt.messages:
            raise BackendResponseError("messages must not be empty", status_code=400)
        _check_forwarded(params)
        # Compiled (once per schema) in a worker thread before the request reaches the model.
        grammar = await self._grammar(params.structured) if params.structured else None
        cancel = threading.Event()
        generation, queue_seconds = await self._enqueue(
            lambda: self._scheduler.decode(
                lambda: self._model.start(prompt, params, cancel, sink, grammar)
            ),
            cancel,
        )
        # Time spent behind other work on the one model thread before its first step.
        return replace(generation, queue_seconds=queue_seconds)

    async def _grammar(self, structured: StructuredOutput) -> Any:
        if self._grammars is None:
            model = self._model
            ends = sorted(eos_ids(model.tokenizer))
            self._grammars = Grammars(model.tokenizer, model.vocab_size, ends)
        return await self._grammars.compiled(structured)

    async def _run(self, work: Callable[[], _T], cancel: threading.Event | None) -> _T:
        """Run `work` whole on the model thread, between two rounds of decoding steps."""
        return await self._enqueue(lambda: self._scheduler.call(work), cancel)

    async def _enqueue(
        self,
        submit: Callable[[], concurrent.futures.Future[_T]],
        cancel: threading.Event | None,
    ) -> _T:
        if self._pending >= self._max_queue:
            raise BackendUnavailable(
                f"the embedded model has {self._pending} requests queued (limit {self._max_queue})"
            )
        self._pending += 1
        future = asyncio.wrap_future(submit())
        # Counted until the model thread is really done with it, even when the caller gave up.
        future.add_done_callback(self._release)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # Its rows leave the batch at their next step; then let the cancellation through.
            if cancel is not None:
                cancel.set()
            raise

    def _release(self, future: asyncio.Future[Any]) -> None:
        self._pending -= 1
        if not future.cancelled():
            # Mark the outcome as seen: when the caller was cancelled nobody else will read it.
            future.exception()


def _offered(prompt: Prompt) -> Tools | None:
    """The tools the model may call in its answer to `prompt`, if any."""
    if isinstance(prompt, ChatPrompt) and prompt.tools is not None:
        return None if prompt.tools.choice == "none" else prompt.tools
    return None


def _forced(params: SamplingParams, tools: Tools) -> SamplingParams:
    """`params` with a forced `tool_choice` enforced as JSON of the allowed calls."""
    schema = forced_schema(tools)
    return params if schema is None else replace(params, structured=schema)


def _with_calls(completion: Completion, tools: Tools) -> Completion:
    """A completion with the calls in its text read out of it."""
    parsed = parse_calls(completion.text, tools, completion.finish_reason)
    if not parsed.calls:
        return completion
    return replace(
        completion,
        text=parsed.text,
        tool_calls=parsed.calls,
        finish_reason=parsed.finish_reason,
    )


# Forwarded vLLM fields the embedded model honours: the effort reaches its chat template with
# the prompt's `template_kwargs`; `user` only names the caller.
_HONOURED = frozenset({"reasoning_effort", "user"})


def _check_forwarded(params: SamplingParams) -> None:
    """A 400 naming a forwarded vLLM field the embedded model cannot honour, as vLLM answers a
    field it does not take."""
    for name in params.forwarded:
        if name not in _HONOURED:
            raise BackendResponseError(
                f"{name} is a vLLM field the embedded model does not take; serve the model with "
                "vLLM (--backend vllm) to use it",
                status_code=400,
                param=name,
            )
