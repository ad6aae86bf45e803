"""The vLLM stand-in as a process, for the benchmarks (`bench.stack` starts it) or by hand:

    .venv/bin/python -m bench.vllm_standin --port 8100
    .venv/bin/python -m bench.vllm_standin --port 8100 --latency-ms 50 --fail-503 0.3
    .venv/bin/python -m bench.vllm_standin --port 8100 --frontend fastapi
    .venv/bin/python -m bench.vllm_standin --port 8100 --frontend checking --script FILE

It serves the model `stub-model`, whose choice i writes "The answer is 4." for most i and
another number for a few (`answers.VOTE_ANSWERS`), so a majority vote has groups to count.
`GET /stats` tells how many calls it received (`POST /stats/reset` zeroes them), so a benchmark
can report backend calls per client request. `--frontend raw` (the default, `raw`) is the
ceiling that isolates a gateway's own cost; `--frontend fastapi` (`vllm_app`) costs about what
vLLM's own API server does per request: the benchmark's issue measured "the stub called
directly" at about 882 req/s at c=64 for a vLLM-shaped FastAPI front end; this one is lighter
than vLLM's whole front end (no chat template, tokenizer or engine round trip: a first smoke run
on 2 shared cores gave about 3,800 req/s at c=64 with n=8), so its ratios are lower bounds on
the share of a vLLM front end's throughput a gateway keeps. `--frontend checking` serves the
tests' front end (`checking`: it checks every request, continues prefixes and honours `stop`)
and reads `--script`, a JSON object of question to model text: a reasoning model per question
(`thinking`), for `bench.thinking`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from bench.vllm_standin.answers import VOTE_ANSWERS
from bench.vllm_standin.checking import serve_checking
from bench.vllm_standin.raw import serve_raw
from bench.vllm_standin.state import Options
from bench.vllm_standin.vllm_app import serve_vllm_app

BENCH_MODEL = "stub-model"
FRONTENDS = ("raw", "fastapi", "checking")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.vllm_standin",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100, help="0 picks a free port")
    parser.add_argument("--model", default=BENCH_MODEL)
    parser.add_argument(
        "--frontend",
        choices=FRONTENDS,
        default="raw",
        help="raw: a bare asyncio server, the ceiling that isolates a gateway's own cost; "
        "fastapi: FastAPI + pydantic + uvicorn shaped like vLLM's API server, about its "
        "per-request HTTP and pydantic cost (toward the issue's ~882 req/s 'direct' at c=64); "
        "checking: the tests' front end, which checks requests and reads --script",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="wait this long before each generation"
    )
    parser.add_argument(
        "--fail-503",
        type=float,
        default=0.0,
        help="answer this random fraction of generation calls with a vLLM-style 503",
    )
    parser.add_argument(
        "--retry-after", action="store_true", help="send Retry-After: 0 with the 503s"
    )
    parser.add_argument(
        "--script",
        help="with --frontend checking: a JSON file of question to model text (a thinking "
        "model per question, bench.vllm_standin.thinking)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve a stand-in with the chosen front end until interrupted."""
    args = parse_args(argv)
    if not 0.0 <= args.fail_503 <= 1.0:
        sys.exit("--fail-503 is a fraction between 0 and 1")
    if args.script and args.frontend != "checking":
        sys.exit("--script needs --frontend checking")
    script: dict[str, str] = {}
    if args.script:
        with open(args.script) as file:
            script = json.load(file)
    options = Options(
        model=args.model,
        answers=VOTE_ANSWERS,
        latency_s=args.latency_ms / 1000,
        fail_503=args.fail_503,
        retry_after=args.retry_after,
        script=tuple(script.items()),
    )
    if args.frontend == "checking":
        serve_checking(args.host, args.port, options)
        return
    if args.frontend == "fastapi":
        serve_vllm_app(args.host, args.port, options)
        return
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve_raw(args.host, args.port, options))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
