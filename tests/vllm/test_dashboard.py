"""The dashboard's vLLM panels return data from real Prometheus scraping real vLLM servers."""

from __future__ import annotations

import openai
from openai.types.chat import ChatCompletionMessageParam

from tests.prometheus import (
    as_prometheus_sees_it,
    dashboard_queries,
    has_data,
    prometheus,
    query,
    wait_for_scrapes,
)
from tests.vllm.conftest import GENERATOR, VLLMServers

QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is 3 + 5? One step per line."}
]
SEARCH = {"verifier": "prm", "n": 2, "beam_width": 1, "num_iterations": 2, "step_separator": "\n"}


def address(url: str) -> str:
    return url.removeprefix("http://")


async def test_every_vllm_panel_returns_data(
    client: openai.AsyncOpenAI, vllm: VLLMServers, gateway: str
) -> None:
    a, b = vllm.generators
    targets = {
        "ttc-gateway": [address(gateway)],
        "vllm-generator": [address(a.url), address(b.url)],
        "vllm-prm": [address(vllm.prm.url)],
    }
    with prometheus(targets) as url:
        # Two searches with scrapes between them, so the rates over the last minute move.
        for _ in range(2):
            wait_for_scrapes(url, "vllm-generator")
            await client.chat.completions.create(
                model=GENERATOR,
                messages=QUESTION,
                max_tokens=32,
                extra_body={"reasoning_strategy": "beam_search", "reasoning_params": SEARCH},
            )
        wait_for_scrapes(url, "vllm-generator")
        empty = [
            f"{title}: {expr}"
            for title, expr in dashboard_queries("vllm")
            if not has_data(query(url, as_prometheus_sees_it(expr)))
        ]
    assert empty == [], "no data for:\n" + "\n".join(empty)
