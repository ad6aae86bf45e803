"""Step 1, `collect`: draw and store the samples from real vLLM, and serve the live and the
particle-filtering rows."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from bench.accuracy.rows import (
    DATA,
    LIVE_PARAMS,
    LIVE_ROWS,
    PARTICLE_ROWS,
    PARTICLES,
    PRM_NAME,
    PRM_STEP_TAG_ID,
    PRM_VERIFIER,
    ROWS,
    SAMPLES,
    SAMPLES_PER_PROBLEM,
    SERVED_NAME,
    TOP_LOGPROBS,
    Problem,
    Row,
    body,
    load_particles,
    load_samples,
    problems,
)
from bench.processes import Services, free_port
from bench.replay import confidences
from bench.stack import checkout_path
from bench.vllm_cpu import prm_flags, vllm_command, vllm_env


def model_dir() -> str:
    """The converted SmolLM2 directory, asked of the project in a child (bench imports none of
    the server's modules)."""
    code = "from backends.smollm2 import converted_model_dir; print(converted_model_dir())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def start_servers(services: Services) -> tuple[str, str]:
    """One vLLM generator, the PRM, and two of this gateway in front of them: one without a
    verifier (the samples, and the live rows, which replay without one: with a PRM configured,
    `auto` would weigh its last stage by it) and one with the PRM (particle filtering); their
    URLs."""
    vllm_port, prm_port = free_port(), free_port()
    model = model_dir()
    servers = []
    for name, port, flags in (
        (SERVED_NAME, vllm_port, []),
        (PRM_NAME, prm_port, prm_flags(PRM_STEP_TAG_ID)),
    ):
        argv = vllm_command(model, name, port, *flags)
        url = f"http://127.0.0.1:{port}"
        servers.append(services.start(name, argv, url, env=vllm_env(kv_cache_gib=2)))
    for server in servers:
        server.wait_ready("/v1/models", timeout_s=900)
    vllm, prm = servers
    verifiers = json.dumps({"prm": {**PRM_VERIFIER, "url": prm.url}})
    gateways = []
    for name, more in (("ttc", []), ("ttc-prm", ["--verifiers", verifiers])):
        port = free_port()
        argv = [sys.executable, "-m", "server", "--backend", "vllm", "--vllm-url", vllm.url]
        argv += [*more, "--port", str(port), "--log-level", "warning"]
        url = f"http://127.0.0.1:{port}"
        gateways.append(services.start(name, argv, url, env=checkout_path()))
    for gateway in gateways:
        gateway.wait_ready("/v1/models", timeout_s=120)
    plain, with_prm = gateways
    return plain.url, with_prm.url


async def post(client: httpx.AsyncClient, url: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"{url}/v1/chat/completions", json=payload)
    if response.is_error:
        raise RuntimeError(f"{response.status_code} for seed {payload['seed']}: {response.text}")
    data: dict[str, Any] = response.json()
    return data


async def draw_samples(url: str, todo: list[Problem], concurrency: int) -> None:
    """16 samples per problem with their tokens' log-probabilities, one request each (the call
    `majority_vote` makes, plus log-probabilities, which do not change what is sampled),
    appended to SAMPLES as they come."""
    row = Row("samples", "none", {})
    limit = asyncio.Semaphore(concurrency)
    started, done = time.monotonic(), 0
    DATA.mkdir(parents=True, exist_ok=True)
    async with httpx.AsyncClient(timeout=1800) as client:

        async def one(problem: Problem) -> None:
            nonlocal done
            payload = body(problem, row, with_trace=False)
            del payload["reasoning_params"]
            payload |= {"n": SAMPLES_PER_PROBLEM, "logprobs": True, "top_logprobs": TOP_LOGPROBS}
            async with limit:
                data = await post(client, url, payload)
            samples = []
            for choice in data["choices"]:
                tokens = confidences(choice["logprobs"]["content"])
                text = choice["message"]["content"]
                samples.append({"text": text, "tokens": len(tokens), "confidences": tokens})
            # `usage` counts the same tokens the log-probabilities came with.
            assert sum(s["tokens"] for s in samples) == data["usage"]["completion_tokens"]
            record = {**asdict(problem), "samples": samples}
            with SAMPLES.open("a") as out:
                out.write(json.dumps(record) + "\n")
            done += 1
            if done % 10 == 0:
                rate = done / (time.monotonic() - started)
                print(f"  {done}/{len(todo)} problems, {rate:.2f}/s", file=sys.stderr, flush=True)

        await asyncio.gather(*(one(p) for p in todo))


def live_subset(all_problems: Sequence[Problem], count: int) -> list[Problem]:
    """`count` problems spread evenly over the list (so over the tiers)."""
    step = max(1, len(all_problems) // max(1, count))
    return list(all_problems[::step][:count])


async def run_live(url: str, subset: list[Problem], path: Path) -> None:
    """The live rows on the subset, one request at a time, written to `path`."""
    rows = [Row(r.label, r.strategy, LIVE_PARAMS.get(r.label, r.params)) for r in ROWS]
    rows = [r for r in rows if r.label in LIVE_ROWS]
    records = []
    async with httpx.AsyncClient(timeout=1800) as client:
        for problem in subset:
            for row in rows:
                data = await post(client, url, body(problem, row, with_trace=True))
                records.append(
                    {
                        "seed": problem.seed,
                        "label": row.label,
                        "strategy": row.strategy,
                        "params": row.params,
                        "content": data["choices"][0]["message"]["content"],
                        "completion_tokens": data["usage"]["completion_tokens"],
                        "stopped_early": data.get("reasoning_stopped_early"),
                    }
                )
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


async def run_particles(url: str, todo: list[Problem], concurrency: int) -> None:
    """Each particle-filtering row on the problems it has not answered yet, appended to
    PARTICLES as they come."""
    done = load_particles()
    jobs = [(p, r) for r in PARTICLE_ROWS for p in todo if p.seed not in done.get(r.label, {})]
    limit = asyncio.Semaphore(concurrency)
    started, finished = time.monotonic(), 0
    async with httpx.AsyncClient(timeout=1800) as client:

        async def one(problem: Problem, row: Row) -> None:
            nonlocal finished
            async with limit:
                data = await post(client, url, body(problem, row, with_trace=False))
            record = {
                "seed": problem.seed,
                "label": row.label,
                "params": row.params,
                "content": data["choices"][0]["message"]["content"],
                "completion_tokens": data["usage"]["completion_tokens"],
                "verifier_tokens": data["usage"]["verifier_tokens"],
                "stopped_early": data.get("reasoning_stopped_early"),
            }
            with PARTICLES.open("a") as out:
                out.write(json.dumps(record) + "\n")
            finished += 1
            if finished % 10 == 0:
                rate = finished / (time.monotonic() - started)
                print(f"  {finished}/{len(jobs)} particle runs, {rate:.2f}/s", file=sys.stderr)

        await asyncio.gather(*(one(p, r) for p, r in jobs))


def collect(args: argparse.Namespace) -> None:
    all_problems = problems(args.per_tier)
    stored = {r["seed"] for r in load_samples()} if SAMPLES.exists() else set()
    todo = [p for p in all_problems if p.seed not in stored]
    with Services() as services:
        url, prm_url = (args.url, args.prm_url) if args.url else start_servers(services)
        print(f"gateway {url}: {len(todo)} problems to sample", file=sys.stderr, flush=True)
        asyncio.run(draw_samples(url, todo, args.concurrency))
        if args.live:
            asyncio.run(run_live(url, live_subset(all_problems, args.live), Path(args.live_file)))
        if args.particles and prm_url is None:
            print("particle rows skipped: no --prm-url", file=sys.stderr)
        elif args.particles:
            asyncio.run(run_particles(prm_url, all_problems, args.concurrency))
