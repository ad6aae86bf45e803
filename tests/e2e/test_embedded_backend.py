"""The embedded backend itself on the real SmolLM2 weights: the operations strategies build on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import pytest

from backends.base import (
    ChatMessage,
    ChatPrompt,
    Prompt,
    SamplingParams,
    StreamDelta,
    StreamEnd,
    TextPrompt,
)
from backends.embedded import EmbeddedBackend
from backends.embedded_decoding import eos_ids
from backends.embedded_model import Dtype, LoadedModel, choose_dtype
from backends.embedded_settings import EmbeddedSettings

pytestmark = pytest.mark.e2e

QUESTION = ChatPrompt((ChatMessage("user", "What is 3 + 4?"),))


@pytest.fixture(scope="module")
def backend() -> Iterator[EmbeddedBackend]:
    # Loaded once for the module; it holds a thread pool, nothing tied to one event loop.
    loaded = asyncio.run(EmbeddedBackend.load(EmbeddedSettings()))
    yield loaded
    asyncio.run(loaded.aclose())


async def test_score_agrees_with_generation_logprobs(backend: EmbeddedBackend) -> None:
    generated = await backend.generate(
        QUESTION, SamplingParams(max_tokens=12, temperature=0, logprobs=0)
    )
    completion = generated.completions[0]
    assert completion.logprobs is not None and len(completion.logprobs) == completion.tokens
    scored = await backend.prompt_logprobs(QUESTION, completion.text)
    # This greedy text re-tokenizes to the same tokens, so teacher forcing sees the same
    # distribution; bf16 differs between cached decoding and one full pass by ~0.03 on average.
    assert [t.token for t in scored.logprobs] == [t.token for t in completion.logprobs]
    gaps = [
        abs(a.logprob - b.logprob)
        for a, b in zip(scored.logprobs, completion.logprobs, strict=True)
    ]
    assert max(gaps) < 0.2
    assert sum(gaps) / len(gaps) < 0.06
    assert scored.prompt_tokens == generated.prompt_tokens + completion.tokens


async def test_top_logprobs_are_sorted_and_contain_greedy_choice(backend: EmbeddedBackend) -> None:
    generated = await backend.generate(
        QUESTION, SamplingParams(max_tokens=4, temperature=0, logprobs=3)
    )
    for lp in generated.completions[0].logprobs or ():
        values = [v for _, v in lp.top]
        assert len(lp.top) == 3 and values == sorted(values, reverse=True)
        assert lp.top[0] == (lp.token, lp.logprob)


async def test_continuation_renders_an_open_assistant_turn(backend: EmbeddedBackend) -> None:
    partial = ChatPrompt(
        (*QUESTION.messages, ChatMessage("assistant", "Step 1:")), continue_final_message=True
    )
    rendered = await backend.render(partial)
    assert rendered.endswith("<|im_start|>assistant\nStep 1:")
    fresh = await backend.render(QUESTION)
    assert fresh.endswith("<|im_start|>assistant\n")
    continued = await backend.generate(partial, SamplingParams(max_tokens=6, temperature=0))
    assert continued.completions[0].tokens > 0


async def test_stop_strings_cut_or_keep(backend: EmbeddedBackend) -> None:
    prompt = TextPrompt("1, 2, 3, 4,")
    free = await backend.generate(prompt, SamplingParams(max_tokens=10, temperature=0))
    text = free.completions[0].text
    assert "," in text
    cut = await backend.generate(prompt, SamplingParams(max_tokens=10, temperature=0, stop=(",",)))
    kept = await backend.generate(
        prompt, SamplingParams(max_tokens=10, temperature=0, stop=(",",), include_stop=True)
    )
    assert cut.completions[0].text == text.split(",")[0]
    assert kept.completions[0].text == text.split(",")[0] + ","
    assert cut.completions[0].finish_reason == "stop"
    assert cut.completions[0].tokens < free.completions[0].tokens


async def test_stream_equals_generate_for_each_sample(backend: EmbeddedBackend) -> None:
    params = SamplingParams(max_tokens=16, temperature=0.9, n=3, seed=5)
    whole = await backend.generate(QUESTION, params)
    texts = ["", "", ""]
    told, prompt_told = [0, 0, 0], 0
    end = None
    async for event in backend.stream(QUESTION, params):
        if isinstance(event, StreamDelta):
            texts[event.index] += event.text
            told[event.index] += event.tokens
            prompt_told += event.prompt_tokens
        else:
            end = event
    assert isinstance(end, StreamEnd)
    assert texts == [c.text for c in whole.completions]
    assert end.completion_tokens == tuple(c.tokens for c in whole.completions)
    assert end.prompt_tokens == whole.prompt_tokens == prompt_told
    # What a stream cut off is charged: the counts its deltas carried (a last token with no
    # text, the end of text, goes with none).
    assert all(0 <= n - t <= 1 for n, t in zip(end.completion_tokens, told, strict=True))


async def test_tiny_temperature_is_greedy(backend: EmbeddedBackend) -> None:
    greedy = await backend.generate(QUESTION, SamplingParams(max_tokens=8, temperature=0))
    tiny = await backend.generate(QUESTION, SamplingParams(max_tokens=8, temperature=1e-40))
    assert tiny.completions[0].text == greedy.completions[0].text


async def test_greedy_equals_transformers_generate(backend: EmbeddedBackend) -> None:
    import torch

    model = backend._model
    ids = model.encode(QUESTION)
    ours = await backend.generate(QUESTION, SamplingParams(max_tokens=24, temperature=0))
    with torch.inference_mode():
        out = model.model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=sorted(eos_ids(model.tokenizer)),
            pad_token_id=model.tokenizer.eos_token_id,
        )
    expected = out[0, len(ids) :].tolist()
    assert ours.completions[0].tokens == len(expected)
    assert ours.completions[0].text == model.tokenizer.decode(expected, skip_special_tokens=True)


async def test_auto_precision_follows_the_cpu(backend: EmbeddedBackend) -> None:
    assert backend._model.dtype == choose_dtype("auto")[0]
    assert str(backend._model.model.dtype) == f"torch.{backend._model.dtype}"


async def test_explicit_precision_is_honoured() -> None:
    other: Dtype = "float32" if choose_dtype("auto")[0] == "bfloat16" else "bfloat16"
    loaded = await asyncio.to_thread(LoadedModel.load, EmbeddedSettings(dtype=other))
    assert loaded.dtype == other
    assert str(loaded.model.dtype) == f"torch.{other}"


async def test_short_request_finishes_while_a_long_one_runs(backend: EmbeddedBackend) -> None:
    counting = TextPrompt("1, 2, 3, 4,")
    long = asyncio.create_task(
        backend.generate(counting, SamplingParams(max_tokens=300, temperature=0, n=2))
    )
    for _ in range(500):
        if backend._scheduler.active_rows == 2:
            break
        await asyncio.sleep(0.01)
    short = await backend.generate(QUESTION, SamplingParams(max_tokens=3, temperature=0))
    assert short.completions[0].tokens == 3
    assert not long.done() and backend._scheduler.active_rows == 2
    # Cancelling the long one takes its rows out of the batch at its next step.
    long.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long
    for _ in range(500):
        if backend._scheduler.active_rows == 0:
            break
        await asyncio.sleep(0.01)
    assert backend._scheduler.active_rows == 0


async def test_requests_batched_together_decode_as_they_do_alone(
    backend: EmbeddedBackend,
) -> None:
    # Different prompt lengths (left padding), a request leaving early (its padding is trimmed)
    # and one joining later: each greedy result is what the request gives on its own.
    long_prompt = ChatPrompt((ChatMessage("user", "Name three colours. " * 12),))
    jobs: list[tuple[Prompt, SamplingParams]] = [
        (TextPrompt("1, 2, 3, 4,"), SamplingParams(max_tokens=30, temperature=0)),
        (long_prompt, SamplingParams(max_tokens=4, temperature=0, n=2)),
        (QUESTION, SamplingParams(max_tokens=12, temperature=0)),
    ]
    alone = [await backend.generate(prompt, params) for prompt, params in jobs]
    first = asyncio.create_task(backend.generate(*jobs[0]))
    second = await backend.generate(*jobs[1])
    assert not first.done()
    third = await backend.generate(*jobs[2])
    together = [await first, second, third]
    for a, b in zip(alone, together, strict=True):
        assert [c.text for c in a.completions] == [c.text for c in b.completions]
        assert [c.tokens for c in a.completions] == [c.tokens for c in b.completions]


async def test_a_seeded_request_samples_the_same_beside_others(backend: EmbeddedBackend) -> None:
    params = SamplingParams(max_tokens=16, n=3, temperature=0.8, seed=7)
    alone = await backend.generate(QUESTION, params)
    other = asyncio.create_task(
        backend.generate(TextPrompt("1, 2, 3, 4,"), SamplingParams(max_tokens=40, temperature=0))
    )
    beside = await backend.generate(QUESTION, params)
    assert not other.done()
    await other
    assert [c.text for c in alone.completions] == [c.text for c in beside.completions]


async def test_closing_a_stream_stops_its_decoding(
    backend: EmbeddedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What DeepConf does to an unconfident trace: read a few tokens, then close the stream.
    decodings: list[Any] = []
    start = backend._model.start

    def watched(*args: Any) -> Any:
        decodings.append(start(*args))
        return decodings[-1]

    monkeypatch.setattr(backend._model, "start", watched)
    counting = TextPrompt("1, 2, 3, 4,")
    stream = backend.stream(counting, SamplingParams(max_tokens=1000, temperature=0, logprobs=0))
    assert isinstance(stream, AsyncGenerator)
    async for event in stream:
        assert isinstance(event, StreamDelta)
        if len(decodings[0]._hook.sequences[0].ids) >= 3:
            break
    await stream.aclose()
    for _ in range(500):
        if backend._scheduler.active_rows == 0 and backend._pending == 0:
            break
        await asyncio.sleep(0.01)
    assert backend._scheduler.active_rows == 0 and backend._pending == 0
    # It left the batch unfinished, long before its 1000 tokens.
    sequence = decodings[0]._hook.sequences[0]
    assert sequence.finish_reason is None and 3 <= len(sequence.ids) < 1000
