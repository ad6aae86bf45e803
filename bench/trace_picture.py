"""A picture of one request's trace: a beam search through the gateway, in this process, in
front of the vLLM stand-in, its spans drawn as a timeline (docs/tracing-beam-search.png).

    python -m bench.trace_picture [--out docs/tracing-beam-search.png]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench.vllm_standin.answers import SERVED_MODEL
from bench.vllm_standin.inprocess import run_standin
from bench.vllm_standin.state import Options
from server.app import create_app
from server.settings import Settings
from server.tracing import tracer_provider

__all__ = ["main"]

BODY = {
    "model": SERVED_MODEL,
    "messages": [{"role": "user", "content": "What is 3 + 4?"}],
    "max_tokens": 64,
    "reasoning_strategy": "beam_search",
    "reasoning_params": {"n": 4, "beam_width": 2, "verifier": "llm_judge"},
}


async def traced_beam_search(url: str) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    settings = Settings.model_validate({"backend": "vllm", "vllm_url": [url]})
    app = create_app(settings, tracing=tracer_provider(None, {}, SimpleSpanProcessor(exporter)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            (await client.post("/v1/chat/completions", json=BODY)).raise_for_status()
    return list(exporter.get_finished_spans())


def depth(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> int:
    level = 0
    while span.parent is not None and span.parent.span_id in by_id:
        span, level = by_id[span.parent.span_id], level + 1
    return level


def draw(spans: list[ReadableSpan], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_id = {s.context.span_id: s for s in spans}
    ordered = sorted(spans, key=lambda s: (s.start_time or 0, depth(s, by_id)))
    start = min(s.start_time or 0 for s in spans)
    colours = {0: "#4c72b0", 1: "#55a868", 2: "#c44e52", 3: "#8172b2", 4: "#ccb974"}
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(ordered) + 1))
    for row, span in enumerate(ordered):
        level = depth(span, by_id)
        begin = ((span.start_time or 0) - start) / 1e6
        length = max(0.05, ((span.end_time or 0) - (span.start_time or 0)) / 1e6)
        ax.barh(row, length, left=begin, color=colours.get(level, "#777777"))
        ax.text(begin, row, "  " * level + span.name, va="center", ha="left", fontsize=7)
    ax.invert_yaxis()
    ax.set_yticks([])
    ax.set_xlabel("milliseconds since the request arrived")
    ax.set_title("One beam search (n 4, beam width 2, llm_judge) as OpenTelemetry spans")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/tracing-beam-search.png"))
    args = parser.parse_args()
    # Three steps to a solution, each call taking 20 ms as a small model's would.
    steps = "First add the numbers.\n\nThree and four make seven.\n\nAnswer: 7"
    with run_standin(options=Options(answers=(steps,), latency_s=0.02)) as standin:
        spans = asyncio.run(traced_beam_search(standin.url))
    draw(spans, args.out)
    print(f"{len(spans)} spans drawn to {args.out}")


if __name__ == "__main__":
    main()
