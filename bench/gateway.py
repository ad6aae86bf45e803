"""Throughput, latency and CPU of the gateway's hot path, against its peers, over a free backend.

Run by hand (a few minutes a pass; the peers are installed on first use):

    .venv/bin/python -m bench.gateway
    .venv/bin/python -m bench.gateway --systems direct,ttc --concurrency 1 64 --passes 5
    .venv/bin/python -m bench.gateway --ttc-args '--limits.max-concurrent-requests 256'
    .venv/bin/python -m bench.gateway --stub-frontend fastapi

Every system sits in front of the same zero-latency vLLM stand-in (`bench.vllm_standin`), so
what is measured is each gateway's own cost of a majority vote over 8 samples:

- `direct`: the stub called directly with the same `n=8` chat completion: the reference
  (what it stands for depends on the stub's front end, below).
- `ttc`: this checkout's server (`python -m server --backend vllm ...`), with
  `reasoning_strategy: majority_vote`, `reasoning_params: {"n": 8}`.
- `its_hub`: `its-hub[iaas]==1.2.0`'s `its-iaas` server, configured through its `/configure`
  endpoint for self-consistency with budget 8.
- `optillm`: `optillm==0.4.0` with `--approach majority_voting` and `k: 8` in the request.

The stub has two front ends (`--stub-frontend`), and what "× direct" means depends on which:

- `raw` (the default): a bare asyncio server answering from pre-encoded bodies, about 10,000
  req/s on 2 cores. It costs next to nothing, so `direct` is a ceiling no real backend reaches
  and the ratio isolates each gateway's own cost.
- `fastapi`: the same answers from a FastAPI app with pydantic request and response models,
  served by uvicorn (uvloop, httptools, one process), built the way vLLM's OpenAI-compatible
  API server is. The issue this benchmark serves measured "the stub called directly" at about
  882 req/s at c=64, the cost of a vLLM-shaped FastAPI front end; with it, `direct` pays a
  vLLM front end's per-request HTTP, validation and serialisation work, and "× direct" reads
  as the share of a real vLLM front end's throughput that the gateway keeps. It is still
  lighter than all of vLLM's front end (no chat template, tokenizer or engine round trip; a
  first smoke run on 2 shared cores gave about 3,800 req/s at c=64, not 882), so the ratio is
  a lower bound on that share.

The peers go into virtual environments of their own under the user's cache directory
(`--venvs`), made on first use and never in CI. Each system is driven at each concurrency by a
load generator in its own process, after a warm-up; passes are interleaved (every system once
per pass) so drift on a shared machine spreads over all of them. Per row it prints req/s, the
ratio to `direct`'s req/s in the same pass, p50/p99 latency, backend calls per client request
(the stub's counter), and the gateway's CPU per request (its process and descendants, from
/proc). The final table gives medians with min-max ranges over passes, in markdown, followed by
the ttc-server targets.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.cli import choices, run_script
from bench.load import LoadGenerator, LoadSpec, percentile
from bench.processes import ServiceError, Services
from bench.stack import STUB_FRONTENDS, Stub, start_stub
from bench.systems import STARTERS, SYSTEMS, Target, default_venvs

FRONTEND_MEANING = {
    "raw": "bare asyncio, the ceiling: × direct isolates the gateway's own cost",
    "fastapi": "vLLM-shaped FastAPI: × direct is the share of a vLLM front end's throughput kept",
}


@dataclass
class Row:
    """One system at one concurrency in one pass."""

    system: str
    concurrency: int
    requests: int
    rate: float
    p50_ms: float
    p99_ms: float
    calls_per_request: float
    gateway_cpu_ms: float | None
    stub_cpu_ms: float
    failures: dict[str, int]
    answer: str
    ratio: float | None = None


def measure(
    target: Target,
    stub: Stub,
    load: LoadGenerator,
    concurrency: int,
    requests: int,
    warmup: int,
) -> Row:
    pid = target.service.pid if target.service else None
    stub_pid = stub.service.pid
    spec = LoadSpec(
        target.url,
        target.body,
        concurrency,
        requests,
        warmup=warmup,
        watch=(stub_pid, pid) if pid else (stub_pid,),
        stats_url=stub.url + "/stats",
    )
    result = load.run(spec)
    gateway_cpu = result.cpu_s.get(pid, 0.0) if pid else 0.0
    stub_cpu = result.cpu_s[stub_pid]
    calls = result.calls
    latencies = result.latencies_ms(200)
    failures = {str(code): count for code, count in result.statuses.items() if code != 200}
    if result.malformed_ok:
        failures["200 without content"] = result.malformed_ok
    answer = result.answers.most_common(1)[0][0] if result.answers else "-"
    return Row(
        system=target.system,
        concurrency=concurrency,
        requests=requests,
        rate=result.rate,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        calls_per_request=calls / requests,
        gateway_cpu_ms=gateway_cpu * 1000 / requests if pid else None,
        stub_cpu_ms=stub_cpu * 1000 / requests,
        failures=failures,
        answer=answer,
    )


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def print_row(row: Row, pass_number: int) -> None:
    failures = ", ".join(f"{k}: {v}" for k, v in row.failures.items()) or "none"
    print(
        f"  pass {pass_number} {row.system:>8} c={row.concurrency:<3} "
        f"{row.rate:8.1f} req/s  x{fmt(row.ratio, 2):>5}  "
        f"p50 {row.p50_ms:7.1f} ms  p99 {row.p99_ms:7.1f} ms  "
        f"calls/req {row.calls_per_request:5.2f}  "
        f"gateway CPU {fmt(row.gateway_cpu_ms, 2):>6} ms/req  "
        f"stub CPU {row.stub_cpu_ms:5.2f} ms/req  failures {failures}  answer {row.answer!r}",
        flush=True,
    )


@dataclass
class Summary:
    """One system at one concurrency over all passes."""

    system: str
    concurrency: int
    rows: list[Row] = field(default_factory=list)

    def values(self, pick: Callable[[Row], float | None]) -> list[float]:
        return [v for v in (pick(row) for row in self.rows) if v is not None and v == v]

    def median(self, pick: Callable[[Row], float | None]) -> float | None:
        values = self.values(pick)
        return statistics.median(values) if values else None

    def cell(self, pick: Callable[[Row], float | None], digits: int = 1) -> str:
        values = self.values(pick)
        if not values:
            return "-"
        median = statistics.median(values)
        if len(values) == 1:
            return fmt(median, digits)
        return f"{fmt(median, digits)} ({fmt(min(values), digits)}–{fmt(max(values), digits)})"


COLUMNS: list[tuple[str, Callable[[Row], float | None], int]] = [
    ("req/s", lambda r: r.rate, 0),
    ("× direct", lambda r: r.ratio, 2),
    ("p50 ms", lambda r: r.p50_ms, 1),
    ("p99 ms", lambda r: r.p99_ms, 1),
    ("backend calls/req", lambda r: r.calls_per_request, 2),
    ("gateway CPU ms/req", lambda r: r.gateway_cpu_ms, 2),
]


def markdown(summaries: list[Summary], stub_frontend: str) -> str:
    header = ["system", "stub", "c", *(name for name, _, _ in COLUMNS), "failed"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for summary in summaries:
        failed = sum(sum(row.failures.values()) for row in summary.rows)
        total = sum(row.requests for row in summary.rows)
        cells = [summary.system, stub_frontend, str(summary.concurrency)]
        cells += [summary.cell(pick, digits) for _, pick, digits in COLUMNS]
        cells.append(f"{failed}/{total}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_report(summaries: dict[tuple[str, int], Summary]) -> list[str]:
    """Whether ttc-server holds its targets, on the medians over passes."""
    lines = []

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "FAIL")

    ttc64, direct1, ttc1 = summaries.get(("ttc", 64)), summaries.get(("direct", 1)), None
    ttc1 = summaries.get(("ttc", 1))
    if ttc64 is None:
        lines.append("c=64 targets: n/a (ttc at c=64 was not measured)")
    else:
        ratio = ttc64.median(lambda r: r.ratio)
        cpu = ttc64.median(lambda r: r.gateway_cpu_ms)
        p50 = ttc64.median(lambda r: r.p50_ms)
        p99 = ttc64.median(lambda r: r.p99_ms)
        lines.append(
            f"[{verdict(None if ratio is None else ratio >= 0.45)}] c=64 throughput "
            f"≥ 0.45× direct: {fmt(ratio, 2)}×"
        )
        lines.append(
            f"[{verdict(None if cpu is None else cpu <= 2.5)}] c=64 gateway CPU ≤ 2.5 ms/request: "
            f"{fmt(cpu, 2)} ms"
        )
        tail = None if p50 is None or p99 is None else p99 <= 2 * p50
        lines.append(
            f"[{verdict(tail)}] c=64 p99 ≤ 2× p50: p99 {fmt(p99)} ms, p50 {fmt(p50)} ms"
            + (f" ({p99 / p50:.2f}×)" if p50 and p99 else "")
        )
    if ttc1 is None or direct1 is None:
        lines.append("c=1 target: n/a (ttc and direct at c=1 are both needed)")
    else:
        ttc_p50, direct_p50 = ttc1.median(lambda r: r.p50_ms), direct1.median(lambda r: r.p50_ms)
        ok = None if ttc_p50 is None or direct_p50 is None else ttc_p50 <= direct_p50 + 2
        lines.append(
            f"[{verdict(ok)}] c=1 p50 ≤ direct p50 + 2 ms: ttc {fmt(ttc_p50, 2)} ms, "
            f"direct {fmt(direct_p50, 2)} ms (+{fmt((ttc_p50 or 0) - (direct_p50 or 0), 2)} ms)"
        )
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--requests", type=int, default=400, help="per row, after the warm-up")
    parser.add_argument("--warmup", type=int, default=0, help="per row; 0 means max(32, 2×c)")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--n", type=int, default=8, help="samples per client request")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--ttc-args", default="", help="extra flags for ttc-server, one string")
    parser.add_argument(
        "--stub-frontend",
        choices=STUB_FRONTENDS,
        default="raw",
        help="the vLLM stand-in's HTTP side. raw: a bare asyncio server (~10,000 req/s), the "
        "ceiling that isolates the gateway's own cost. fastapi: FastAPI + pydantic + uvicorn "
        "built like vLLM's OpenAI server (the issue's ~882 req/s 'stub called directly' at "
        "c=64; lighter than all of vLLM), so '× direct' reads as the share of a real vLLM "
        "front end's throughput the gateway keeps (a lower bound)",
    )
    parser.add_argument("--venvs", type=Path, default=default_venvs(), help="peers' environments")
    parser.add_argument("--logs", type=Path, default=None, help="children's logs (default: tmp)")
    args = parser.parse_args(argv)
    args.systems = choices(parser, args.systems, list(SYSTEMS), "systems")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    print(f"ttc-server gateway benchmark: {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(
        f"systems {args.systems}, concurrency {args.concurrency}, {args.requests} requests a row, "
        f"{args.passes} passes, n={args.n}, max_tokens={args.max_tokens}, "
        f"ttc args {args.ttc_args!r}, stub front end {args.stub_frontend}, "
        f"cores {os.cpu_count()}",
        flush=True,
    )
    summaries: dict[tuple[str, int], Summary] = {}
    unavailable: dict[str, str] = {}
    with Services(args.logs) as services, LoadGenerator() as load:
        print(f"children's logs in {services.log_dir}")
        stub = start_stub(services, frontend=args.stub_frontend)
        targets: list[Target] = []
        for system in args.systems:
            started = time.monotonic()
            try:
                targets.append(STARTERS[system](services, stub, args))
            except (ServiceError, subprocess.CalledProcessError, OSError) as exc:
                unavailable[system] = str(exc)
                print(f"{system}: UNAVAILABLE: {exc}", flush=True)
                continue
            print(f"{system}: ready in {time.monotonic() - started:.1f} s", flush=True)
        for pass_number in range(1, args.passes + 1):
            print(f"pass {pass_number}/{args.passes}", flush=True)
            for concurrency in args.concurrency:
                warmup = args.warmup or max(32, 2 * concurrency)
                direct_rate: float | None = None
                for target in targets:
                    if target.service and target.service.process.poll() is not None:
                        raise target.service.failure("died during the benchmark")
                    row = measure(target, stub, load, concurrency, args.requests, warmup)
                    if target.system == "direct":
                        direct_rate = row.rate
                    row.ratio = row.rate / direct_rate if direct_rate else None
                    key = (target.system, concurrency)
                    summaries.setdefault(key, Summary(*key)).rows.append(row)
                    print_row(row, pass_number)
    ordered = [
        summaries[(t, c)] for t in args.systems for c in args.concurrency if (t, c) in summaries
    ]
    print()
    print(
        f"Medians over {args.passes} passes (min–max), {args.requests} requests a row, n={args.n}, "
        f"stub front end `{args.stub_frontend}` ({FRONTEND_MEANING[args.stub_frontend]}):"
    )
    print()
    print(markdown(ordered, args.stub_frontend))
    print()
    print("CPU is the gateway process and its descendants (utime+stime from /proc); `direct` has")
    print("no gateway. Backend calls are every request the stub received, per client request.")
    for system, reason in unavailable.items():
        print(f"\n{system} was not measured: {reason}")
    if "ttc" in args.systems:
        print(f"\nttc-server targets (medians, stub front end `{args.stub_frontend}`):")
        for line in targets_report(summaries):
            print("  " + line)
    return 0


if __name__ == "__main__":
    run_script(main)
