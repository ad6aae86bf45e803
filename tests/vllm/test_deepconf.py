"""DeepConf online against real vLLM: a trace the gateway stops is a request vLLM aborts.

vLLM 0.32 does not count a request its client walked away from in
`vllm:request_success_total` (not even as `finished_reason="abort"`): the abort drops the
request's state before its stats are recorded. Every request that produced a token is counted
in `vllm:time_to_first_token_seconds_count`, though, so the requests vLLM aborted are those
that started and never finished.
"""

from __future__ import annotations

import openai

from tests.vllm.conftest import GENERATOR, VLLMServers
from tests.vllm.scrape import measured
from tests.vllm.test_strategies import QUESTION


async def test_stopped_traces_are_aborted_in_vllm(
    client: openai.AsyncOpenAI, vllm: VLLMServers
) -> None:
    async with measured(vllm.all) as cost:
        response = await client.chat.completions.create(
            model=GENERATOR,
            messages=QUESTION,
            max_tokens=48,
            temperature=0.8,
            seed=3,
            extra_body={
                "reasoning_strategy": "majority_vote",
                "reasoning_params": {
                    "n": 8,
                    "return_trace": True,
                    "answer_format": "last_number",
                    # DeepConf-low: most traces after the warm-up fall below its threshold.
                    "early_stop": {"method": "deepconf", "warmup": 4, "keep": "low", "window": 4},
                },
            },
        )

    trace = (response.model_extra or {})["reasoning_trace"]["deepconf"]["traces"]
    cut = [t for t in trace if t["status"] in ("stopped", "cancelled")]
    assert cut, "DeepConf-low should stop some of SmolLM2's traces"
    # The warm-up's 4 sequences, then one request per later trace: each wrote a first token.
    started = cost.total("vllm:time_to_first_token_seconds_count")
    finished = cost.total("vllm:request_success_total")
    assert started == 8
    # Each trace the gateway cut is a request vLLM aborted: started, never finished. (One cut
    # at its very last token may have finished in vLLM before the gateway closed it.)
    aborted = started - finished
    assert 1 <= aborted <= len(cut), f"{aborted} aborted of {len(cut)} cut"
    # Usage counts what reached the gateway; vLLM may have generated a few more tokens for a
    # cut trace before the abort landed, never fewer.
    usage = response.usage
    assert usage is not None
    generated = cost.total("vllm:generation_tokens_total")
    assert sum(t["tokens"] for t in trace) == usage.completion_tokens <= generated, (
        f"reported {usage.completion_tokens}, vLLM generated {generated}"
    )
