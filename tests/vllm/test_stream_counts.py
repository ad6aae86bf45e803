"""What a stream cut off is charged rests on the counts vLLM streams with `return_token_ids`:
the prompt's ids with the first chunk and each chunk's generated `token_ids`. Read from real
vLLM by the gateway's backend, the counts its deltas carry add up to the usage vLLM reports
once the stream ends."""

from __future__ import annotations

from backends.base import ChatMessage, ChatPrompt, SamplingParams, StreamDelta, StreamEnd
from backends.vllm import VLLMBackend
from backends.vllm_client import HTTPClients, VLLMClientSettings
from tests.vllm.conftest import GENERATOR, VLLMServers


async def test_deltas_carry_the_counts_vllm_reports_at_the_end(vllm: VLLMServers) -> None:
    clients = HTTPClients(VLLMClientSettings())
    try:
        session = VLLMBackend(clients.open(), [vllm.generators[0].url], GENERATOR).session()
        prompt = ChatPrompt((ChatMessage("user", "Write a long story about a cat."),))
        params = SamplingParams(n=2, max_tokens=24, temperature=0.7)
        deltas: list[StreamDelta] = []
        ends: list[StreamEnd] = []
        async for event in session.stream(prompt, params):
            if isinstance(event, StreamDelta):
                deltas.append(event)
            else:
                ends.append(event)
    finally:
        await clients.aclose()
    (end,) = ends
    assert end.prompt_tokens > 0
    assert deltas[0].prompt_tokens == end.prompt_tokens
    assert sum(d.prompt_tokens for d in deltas) == end.prompt_tokens
    for i in range(params.n):
        told = sum(d.tokens for d in deltas if d.index == i)
        # Tokens with no text yet go with the next delta; those at the very end (the end of
        # text, or a character the limit cut in its middle: up to 3 more bytes) go with none.
        assert 0 <= end.completion_tokens[i] - told <= 4, (told, end.completion_tokens)
