"""A picture of one request's trace: a beam search through the gateway (a process of its own,
exporting its spans over OTLP/HTTP as a deployment would) in front of the vLLM stand-in, its
spans received here and drawn as a timeline (docs/tracing-beam-search.png).

    python -m bench.trace_picture [--out docs/tracing-beam-search.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.processes import Services, free_port, poll
from bench.stack import STUB_MODEL, Stub, checkout_path, post_json, start_ttc

__all__ = ["main"]

QUESTION = "What is 3 + 4?"
# Three steps to a solution.
STEPS = "First add the numbers.\n\nThree and four make seven.\n\nAnswer: 7"
BODY = {
    "model": STUB_MODEL,
    "messages": [{"role": "user", "content": QUESTION}],
    "max_tokens": 64,
    "reasoning_strategy": "beam_search",
    "reasoning_params": {"n": 4, "beam_width": 2, "verifier": "llm_judge"},
}


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: bytes
    span_id: bytes
    parent_id: bytes
    start_ns: int
    end_ns: int


class _Collector(BaseHTTPRequestHandler):
    spans: list[Span] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(
                    Span(
                        s.name,
                        s.trace_id,
                        s.span_id,
                        s.parent_span_id,
                        s.start_time_unix_nano,
                        s.end_time_unix_nano,
                    )
                    for s in scope.spans
                )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


def traced_beam_search(services: Services, work: Path) -> list[Span]:
    collector = ThreadingHTTPServer(("127.0.0.1", free_port()), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    script = work / "script.json"
    script.write_text(json.dumps({QUESTION: STEPS}))
    port = free_port()
    argv = [sys.executable, "-m", "bench.vllm_standin", "--port", str(port)]
    argv += ["--frontend", "checking", "--script", str(script)]
    argv += ["--model", STUB_MODEL]
    standin = services.start("standin", argv, f"http://127.0.0.1:{port}", env=checkout_path())
    standin.wait_ready("/v1/models", timeout_s=20)
    traced = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }

    gateway = start_ttc(services, Stub(standin, "checking"), env=traced)
    post_json(gateway.url + "/v1/chat/completions", BODY, timeout_s=60)
    if not poll(lambda: any(s.name.startswith("POST ") for s in _Collector.spans), 30):
        raise SystemExit("the gateway's spans never arrived")
    collector.shutdown()
    (request,) = [s for s in _Collector.spans if s.name.startswith("POST ")]
    # The request's trace only (the readiness checks are traces of their own).
    return [s for s in _Collector.spans if s.trace_id == request.trace_id]


def depth(span: Span, by_id: dict[bytes, Span]) -> int:
    level = 0
    while span.parent_id in by_id:
        span, level = by_id[span.parent_id], level + 1
    return level


def draw(spans: list[Span], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_id = {s.span_id: s for s in spans}
    ordered = sorted(spans, key=lambda s: (s.start_ns, depth(s, by_id)))
    start = min(s.start_ns for s in spans)
    colours = {0: "#4c72b0", 1: "#55a868", 2: "#c44e52", 3: "#8172b2", 4: "#ccb974"}
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(ordered) + 1))
    for row, span in enumerate(ordered):
        level = depth(span, by_id)
        begin = (span.start_ns - start) / 1e6
        length = max(0.05, (span.end_ns - span.start_ns) / 1e6)
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
    with tempfile.TemporaryDirectory() as work, Services(Path(work)) as services:
        spans = traced_beam_search(services, Path(work))
    draw(spans, args.out)
    print(f"{len(spans)} spans drawn to {args.out}")


if __name__ == "__main__":
    main()
