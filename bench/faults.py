"""Resilience of the gateway: a failing backend, a slow backend with many clients, overload.

Run by hand (about a minute for the first two scenarios):

    .venv/bin/python -m bench.faults                          # scenarios a and b
    .venv/bin/python -m bench.faults --scenarios c \
        --overload-args '--limits.max-concurrent-requests 64 --limits.max-queued-requests 0'

Each scenario starts its own vLLM stand-in (`bench.vllm_standin`) and this checkout's gateway
in front of it, and drives majority votes (n=8) from a load generator in its own process.
`--stub-frontend` picks the stub's HTTP side: `raw` (default, a bare asyncio server) or
`fastapi` (FastAPI + pydantic + uvicorn, the per-request cost of vLLM's own API server):

- a, failing backend: the stub answers 503 to 30% of generation calls; 400 requests at c=16.
  Reports the fraction of client requests that succeeded (target ≥ 95%), the statuses of the
  rest, and whether every failure body is an OpenAI error object
  `{"error": {"message", "type", "param", "code"}}`.
- b, slow backend: the stub waits 50 ms per call; 1000 requests at c=200. Reports whether all
  succeeded, p50/p99 (target p99 < 1 s), and the gateway's RSS (VmRSS, process and
  descendants) cold, before (after a warm-up burst), after and at most, sampled during the run
  (it should stay flat).
- c, overload: the gateway started with `--overload-args` (by default 32 requests at once and 16
  waiting, so that most of c=200 is turned away), the 50 ms stub,
  c=200. Counts the 503s, their latency (they should come at once) and whether they carry
  `Retry-After`. A gateway that rejects the flags is reported as such, with its log's tail.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.cli import choices, run_script
from bench.load import LoadGenerator, LoadResult, LoadSpec, percentile
from bench.processes import Service, ServiceError, Services
from bench.procfs import rss_kib
from bench.stack import STUB_FRONTENDS, Stub, start_stub, start_ttc, ttc_body

SCENARIOS = ("a", "b", "c")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def describe(result: LoadResult) -> list[str]:
    """Statuses, error bodies and latencies of a run, one fact a line."""
    total = len(result.samples)
    statuses = ", ".join(f"{code}: {count}" for code, count in sorted(result.statuses.items()))
    lines = [
        f"{total} requests in {result.elapsed_s:.2f} s ({result.rate:.1f} req/s); "
        f"statuses {statuses}",
    ]
    for status in sorted(result.statuses):
        latencies = result.latencies_ms(status)
        lines.append(
            f"  status {status or 'no answer'}: p50 {percentile(latencies, 50):.1f} ms, "
            f"p99 {percentile(latencies, 99):.1f} ms, max {max(latencies):.1f} ms"
        )
    if result.exceptions:
        lines.append(f"  client-side errors: {dict(result.exceptions)}")
    failures = total - result.ok
    if failures:
        conforming = failures - result.malformed_errors - sum(result.exceptions.values())
        lines.append(
            f"  failure bodies that are OpenAI error objects: {conforming}/{failures}"
            + (f"; e.g. {result.malformed_examples}" if result.malformed_examples else "")
        )
        with_retry = sum(result.retry_after.values())
        lines.append(f"  failures carrying Retry-After: {with_retry}/{failures}")
    if result.malformed_ok:
        lines.append(f"  200s without a message content: {result.malformed_ok}")
    return lines


def start_scenario(
    services: Services,
    args: argparse.Namespace,
    scenario: str,
    ttc_args: str,
    latency_ms: float = 0.0,
    fail_503: float = 0.0,
) -> tuple[Stub, Service, str]:
    """A scenario's stand-in and gateway, and the URL its load is sent to."""
    stub = start_stub(
        services,
        latency_ms=latency_ms,
        fail_503=fail_503,
        name=f"stub-{scenario}",
        frontend=args.stub_frontend,
    )
    ttc = start_ttc(services, stub, ttc_args, name=f"ttc-{scenario}")
    return stub, ttc, ttc.url + "/v1/chat/completions"


def scenario_a(args: argparse.Namespace, load: LoadGenerator) -> None:
    print(
        f"(a) stub answers 503 to {args.fail_fraction:.0%} of generation calls; "
        f"{args.a_requests} requests at c={args.a_concurrency}"
    )
    with Services(args.logs) as services:
        stub, _, url = start_scenario(
            services, args, "a", args.ttc_args, fail_503=args.fail_fraction
        )
        body = ttc_body(args.n, args.max_tokens)
        spec = LoadSpec(url, body, args.a_concurrency, args.a_requests)
        stub.reset()
        result = load.run(spec)
        stats = stub.stats()
    for line in describe(result):
        print("  " + line)
    success = result.ok / len(result.samples)
    print(
        f"  backend: {stats['generation_calls']} generation calls "
        f"({stats['generation_calls'] / len(result.samples):.2f} per request), "
        f"{stats['failed_503']} answered 503"
    )
    failures = len(result.samples) - result.ok
    all_errors_conform = result.malformed_errors == 0 and not result.exceptions
    print(f"  [{verdict(success >= 0.95)}] success ≥ 95%: {success:.1%}")
    print(
        f"  [{verdict(all_errors_conform)}] every failure body is an OpenAI error object "
        f"({failures} failures)"
    )


def scenario_b(args: argparse.Namespace, load: LoadGenerator) -> None:
    print(
        f"(b) stub waits {args.latency_ms:.0f} ms a call; {args.b_requests} requests at "
        f"c={args.b_concurrency}"
    )
    with Services(args.logs) as services:
        _, ttc, url = start_scenario(services, args, "b", args.ttc_args, latency_ms=args.latency_ms)
        body = ttc_body(args.n, args.max_tokens)
        spec = LoadSpec(url, body, args.b_concurrency, args.b_requests)
        cold = rss_kib(ttc.pid)
        # A first burst grows pools and caches once; flat memory is judged from after it.
        if args.b_warmup:
            load.run(LoadSpec(url, body, args.b_concurrency, args.b_warmup))
        before = rss_kib(ttc.pid)
        result, samples = load.run_sampling_rss(spec, ttc.pid)
        after = rss_kib(ttc.pid)
    for line in describe(result):
        print("  " + line)
    latencies = result.latencies_ms(200)
    p99 = percentile(latencies, 99)
    peak = max(samples)
    print(
        f"  gateway RSS: cold {cold / 1024:.1f} MiB, after a {args.b_warmup}-request warm-up "
        f"(before) {before / 1024:.1f} MiB, after {after / 1024:.1f} MiB, "
        f"max {peak / 1024:.1f} MiB over {len(samples)} samples "
        f"(+{(peak - before) / 1024:.1f} MiB at most, +{(after - before) / 1024:.1f} MiB after)"
    )
    print(
        f"  [{verdict(result.ok == len(result.samples))}] all succeed: "
        f"{result.ok}/{len(result.samples)}"
    )
    print(
        f"  [{verdict(p99 < 1000)}] p99 < 1 s: {p99:.1f} ms "
        f"(p50 {percentile(latencies, 50):.1f} ms)"
    )


def scenario_c(args: argparse.Namespace, load: LoadGenerator) -> None:
    print(
        f"(c) overload: ttc-server {args.overload_args!r}, stub waits {args.latency_ms:.0f} ms, "
        f"{args.c_requests} requests at c={args.c_concurrency}"
    )
    extra = " ".join(part for part in (args.ttc_args, args.overload_args) if part)
    with Services(args.logs) as services:
        try:
            _, _, url = start_scenario(services, args, "c", extra, latency_ms=args.latency_ms)
        except ServiceError as exc:
            print(f"  the gateway did not start with {extra!r}; does it know these flags?")
            print("  " + str(exc).replace("\n", "\n  "))
            return
        body = ttc_body(args.n, args.max_tokens)
        spec = LoadSpec(url, body, args.c_concurrency, args.c_requests)
        result = load.run(spec)
    for line in describe(result):
        print("  " + line)
    rejected = result.latencies_ms(503)
    print(f"  rejected with 503: {len(rejected)}/{len(result.samples)}")
    if rejected:
        print(
            f"  rejected latency: p50 {percentile(rejected, 50):.1f} ms, "
            f"p99 {percentile(rejected, 99):.1f} ms"
        )
        print(f"  rejected carrying Retry-After: {result.retry_after[503]}/{len(rejected)}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scenarios", default="a,b", help="comma-separated, of a, b, c")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--ttc-args", default="", help="extra flags for ttc-server, every scenario")
    parser.add_argument(
        "--stub-frontend",
        choices=STUB_FRONTENDS,
        default="raw",
        help="the vLLM stand-in's HTTP side: raw (bare asyncio) or fastapi (shaped like vLLM's "
        "API server)",
    )
    parser.add_argument("--fail-fraction", type=float, default=0.3)
    parser.add_argument("--a-requests", type=int, default=400)
    parser.add_argument("--a-concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--b-requests", type=int, default=1000)
    parser.add_argument("--b-concurrency", type=int, default=200)
    parser.add_argument("--b-warmup", type=int, default=200, help="requests before RSS 'before'")
    parser.add_argument(
        "--overload-args",
        default="--limits.max-concurrent-requests 32 --limits.max-queued-requests 16",
        help="for scenario c",
    )
    parser.add_argument("--c-requests", type=int, default=1000)
    parser.add_argument("--c-concurrency", type=int, default=200)
    parser.add_argument("--logs", type=Path, default=None, help="children's logs (default: tmp)")
    args = parser.parse_args(argv)
    args.scenarios = choices(parser, args.scenarios, list(SCENARIOS), "scenarios")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"ttc-server fault benchmark: {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"stub front end: {args.stub_frontend}", flush=True)
    runners = {"a": scenario_a, "b": scenario_b, "c": scenario_c}
    with LoadGenerator() as load:
        for scenario in args.scenarios:
            runners[scenario](args, load)
            print(flush=True)
    return 0


if __name__ == "__main__":
    run_script(main)
