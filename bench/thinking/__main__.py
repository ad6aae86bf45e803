"""`python -m bench.thinking`: see the package's docstring."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai

from bench import thinking
from bench.accuracy.rows import TIERS, problems
from bench.cli import choices, run_script
from bench.processes import Services
from bench.stack import ROOT
from bench.thinking.asking import Asking
from bench.thinking.measure import measure
from bench.thinking.plot import plot
from bench.thinking.presets import SYSTEMS, settings
from bench.thinking.report import print_report, rows, unclosed_note
from bench.thinking.servers import start_embedded, start_standin


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.thinking", description=(thinking.__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--system", choices=sorted(SYSTEMS), default="standin")
    parser.add_argument(
        "--gateway-url",
        help="a running gateway (needed by --system reasoning; not with standin, whose "
        "stand-in must read this run's script)",
    )
    parser.add_argument("--model", help="the served model; default: the gateway's first")
    parser.add_argument("--api-key", default=os.environ.get("TTC_API_KEY", "unused"))
    parser.add_argument("--per-tier", type=int, help="problems per tier (default: the system's)")
    parser.add_argument("--tiers", default=",".join(TIERS), help="comma-separated tiers")
    parser.add_argument("--max-tokens", type=int, help="per candidate: thinking and answer")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--n", type=int, default=1, help="candidates per problem (a vote)")
    parser.add_argument("--budgets", type=int, nargs="*", help="thinking budgets (max_tokens)")
    parser.add_argument(
        "--probes", nargs="*", help="probe settings, interval:agree or interval:agree:budget"
    )
    parser.add_argument("--concurrency", type=int, default=1, help="problems in flight")
    parser.add_argument("--plot", type=Path, help="write the PNG plot here")
    parser.add_argument("--json", type=Path, help="write every answer here")
    args = parser.parse_args()
    args.tiers = choices(parser, args.tiers, TIERS, "tiers")
    if args.system == "reasoning" and not args.gateway_url:
        parser.error("--system reasoning needs --gateway-url")
    if args.system == "standin" and args.gateway_url:
        parser.error("--system standin starts its own stand-in and gateway")
    return args


def machine() -> str:
    """A line about where it ran."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{platform.node() or 'host'}: {os.cpu_count()} CPUs ({cpu}), load {load} at start"


def revision() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


async def run(url: str, args: argparse.Namespace) -> None:
    system = SYSTEMS[args.system]
    chosen = settings(
        system.budgets if args.budgets is None else args.budgets,
        system.probes if args.probes is None else args.probes,
    )
    asked = [p for p in problems(args.per_tier or system.per_tier) if p.tier in args.tiers]
    max_tokens = args.max_tokens or system.max_tokens
    temperature = system.temperature if args.temperature is None else args.temperature
    client = openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=args.api_key, timeout=3600, max_retries=0
    )
    async with client:
        model = args.model or (await client.models.list()).data[0].id
        asking = Asking(client, model, system, max_tokens, temperature, args.n)
        header: dict[str, Any] = {
            "command": shlex.join(["python", "-m", "bench.thinking", *sys.argv[1:]]),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "gateway": f"this checkout ({revision()})" if not args.gateway_url else url,
            "model": f"{model}: {system.note}",
            "requests": f"{len(asked)} problems ({', '.join(args.tiers)}), {system.api} API, "
            f"majority_vote n={args.n}, max_tokens {max_tokens}, temperature {temperature}",
        }
        print(f"{len(asked)} problems × {len(chosen)} settings on {model}", file=sys.stderr)
        started = time.monotonic()
        answers = await measure(asking, asked, chosen, args.concurrency)
        header["took"] = f"{time.monotonic() - started:.0f} s"
    print_report(rows(answers, chosen, max_tokens), header, unclosed_note(answers))
    plot(answers, f"{model} ({args.system}): accuracy against thinking tokens", args.plot)
    if args.json:
        dump = {label: [asdict(a) for a in got] for label, got in answers.items()}
        args.json.write_text(json.dumps({"header": header, "answers": dump}, indent=1))


def main() -> int:
    args = parse_args()
    if args.gateway_url:
        asyncio.run(run(args.gateway_url.rstrip("/"), args))
        return 0
    with Services(keep_logs=False) as services:
        if args.system == "standin":
            system = SYSTEMS["standin"]
            url = start_standin(services, problems(args.per_tier or system.per_tier))
        else:
            url = start_embedded(services)
        asyncio.run(run(url, args))
    return 0


if __name__ == "__main__":
    run_script(main)
