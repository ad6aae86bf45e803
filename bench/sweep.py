"""Every strategy, live, on generated single-digit additions, through the gateway.

Run by hand (it takes a while on a CPU):

    .venv/bin/python -m bench.sweep                  # starts its own gateway (embedded model)
    .venv/bin/python -m bench.sweep --url http://127.0.0.1:8000 --problems 24 --n 1 2 4 8

Every configuration answers the same problems with the same seeds, so rows compare like with
like: greedy decoding, one sample, for each N majority vote, weighted vote and best-of-N with
each configured verifier, and beam search, DVTS and MCTS with the PRM-capable verifier. It
prints accuracy, generated and verifier tokens per problem, and each row's accuracy and token
cost relative to greedy decoding measured in the same run (greedy is always measured).
The answer is the last number of the returned message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai

from bench.cli import run_script
from bench.processes import Services, free_port
from bench.stack import checkout_path

SYSTEM = "Think step by step, then give the final answer as a number."
MAX_TOKENS = 48
TEMPERATURE = 0.7
_NUMBER = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Config:
    """One row of the table: a strategy with its params."""

    label: str
    strategy: str
    params: dict[str, Any]
    temperature: float = TEMPERATURE


@dataclass
class Row:
    """What one configuration scored."""

    config: Config
    correct: int = 0
    completion_tokens: int = 0
    verifier_tokens: int = 0
    seconds: float = 0.0


def problems(count: int, seed: int) -> list[tuple[int, int]]:
    """Distinct single-digit additions, in a fixed order for a seed."""
    pairs = [(a, b) for a in range(10) for b in range(10)]
    random.Random(seed).shuffle(pairs)
    return pairs[:count]


def configs(ns: list[int], verifiers: list[str], prm: str) -> list[Config]:
    rows = [
        Config("greedy", "none", {}, temperature=0.0),
        Config("one sample (T=0.7)", "none", {}),
    ]
    for n in ns:
        common = {"n": n, "max_tokens": MAX_TOKENS, "answer_format": "last_number"}
        rows.append(Config(f"majority@{n}", "majority_vote", common))
        for verifier in verifiers:
            scored = {**common, "verifier": verifier}
            rows.append(Config(f"weighted@{n} {verifier}", "weighted_vote", scored))
            rows.append(Config(f"best-of-{n} {verifier}", "best_of_n", scored))
    # Step-level searches: steps end at a newline, which is how SmolLM2 lays out arithmetic.
    search = {"verifier": prm, "step_separator": "\n", "max_step_tokens": 24}
    for n in [n for n in ns if n >= 2]:
        width = 2 if n >= 4 else 1
        beams = {**search, "n": n, "beam_width": width, "num_iterations": 4}
        rows.append(Config(f"beam n={n} m={width} {prm}", "beam_search", beams))
        rows.append(Config(f"dvts n={n} m={width} {prm}", "dvts", beams))
        tree = {**search, "iterations": 2 * n, "k": 3, "max_depth": 4}
        rows.append(Config(f"mcts it={2 * n} k=3 {prm}", "mcts", tree))
    return rows


def last_number(text: str | None) -> int | None:
    found = _NUMBER.findall(text or "")
    return int(found[-1]) if found else None


async def solve(
    client: openai.AsyncOpenAI, model: str, config: Config, a: int, b: int, seed: int
) -> tuple[bool, int, int]:
    response = await client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"What is {a} + {b}?"},
        ],
        max_tokens=MAX_TOKENS,
        temperature=config.temperature,
        seed=seed,
        extra_body={
            "reasoning_strategy": config.strategy,
            "reasoning_params": config.params or None,
        },
    )
    usage = response.usage
    assert usage is not None
    verifier_tokens = int((usage.model_extra or {}).get("verifier_tokens", 0))
    answer = last_number(response.choices[0].message.content)
    return answer == a + b, usage.completion_tokens, verifier_tokens


async def measure(
    client: openai.AsyncOpenAI, model: str, config: Config, pairs: list[tuple[int, int]], seed: int
) -> Row:
    row = Row(config)
    started = time.perf_counter()
    # A few in flight keep the model busy while responses travel; the gateway queues the rest.
    limit = asyncio.Semaphore(4)

    async def one(index: int, a: int, b: int) -> tuple[bool, int, int]:
        async with limit:
            return await solve(client, model, config, a, b, seed + index)

    results = await asyncio.gather(*(one(i, a, b) for i, (a, b) in enumerate(pairs)))
    row.seconds = time.perf_counter() - started
    for correct, completion, verifier in results:
        row.correct += correct
        row.completion_tokens += completion
        row.verifier_tokens += verifier
    return row


def report(rows: list[Row], count: int) -> None:
    greedy = rows[0]
    base_accuracy = greedy.correct / count
    base_tokens = greedy.completion_tokens / count
    header = (
        f"{'configuration':<28} {'accuracy':>8} {'gen tok/prob':>12} {'ver tok/prob':>12} "
        f"{'acc/greedy':>10} {'tok/greedy':>10} {'s/prob':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        accuracy = row.correct / count
        tokens = row.completion_tokens / count
        print(
            f"{row.config.label:<28} {accuracy:>8.0%} {tokens:>12.1f} "
            f"{row.verifier_tokens / count:>12.1f} "
            f"{(accuracy / base_accuracy if base_accuracy else float('nan')):>10.2f} "
            f"{tokens / base_tokens:>10.1f} {row.seconds / count:>7.2f}"
        )


@contextlib.contextmanager
def own_gateway() -> Iterator[str]:
    """This checkout's gateway on the embedded model, until the block ends; its URL."""
    port = free_port()
    with Services(keep_logs=False) as services:
        argv = [sys.executable, "-m", "server", "--port", str(port), "--log-level", "warning"]
        gateway = services.start("ttc", argv, f"http://127.0.0.1:{port}", env=checkout_path())
        gateway.wait_ready("/ready", timeout_s=600)
        yield gateway.url


async def run(url: str, args: argparse.Namespace) -> None:
    pairs = problems(args.problems, args.seed)
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", timeout=3600) as client:
        model = (await client.models.list()).data[0].id
        print(f"model {model}, {len(pairs)} problems, max_tokens {MAX_TOKENS}, T={TEMPERATURE}")
        rows = []
        for config in configs(args.n, args.verifiers, args.prm):
            wanted = config.label == "greedy" or any(w in config.label for w in args.only or [""])
            if not wanted:
                continue
            row = await measure(client, model, config, pairs, args.seed)
            rows.append(row)
            # As it goes, so a run cut short still reports what it measured.
            print(
                f"  {config.label}: {row.correct}/{len(pairs)} correct, "
                f"{row.completion_tokens / len(pairs):.1f} generated and "
                f"{row.verifier_tokens / len(pairs):.1f} verifier tokens per problem, "
                f"{row.seconds / len(pairs):.2f} s per problem",
                file=sys.stderr,
                flush=True,
            )
    report(rows, len(pairs))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                [
                    {
                        "label": r.config.label,
                        "correct": r.correct,
                        "problems": len(pairs),
                        "completion_tokens": r.completion_tokens,
                        "verifier_tokens": r.verifier_tokens,
                        "seconds": r.seconds,
                    }
                    for r in rows
                ],
                out,
                indent=2,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running gateway; default: start one on the embedded model")
    parser.add_argument("--problems", type=int, default=24)
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--verifiers", nargs="+", default=["confidence", "llm_judge"])
    parser.add_argument("--prm", default="llm_judge", help="verifier the searches use as PRM")
    parser.add_argument(
        "--only", nargs="+", help="measure only rows whose label contains one of these words"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args.url, args))
    else:
        with own_gateway() as url:
            asyncio.run(run(url, args))
    return 0


if __name__ == "__main__":
    run_script(main)
