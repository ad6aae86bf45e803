"""What `bench.accuracy` measures: the problems, the rows, and where their samples are stored."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any

from bench.replay import default_policy
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

SERVED_NAME = "smollm2"
# The PRM of the vLLM job (tests/vllm/conftest.py): SmolLM2's `+`/`-` rows as a two-class head
# and a STEP pooler on `<file_sep>` (token 5). Its scores mean little; particle filtering runs on
# it so that its row measures the served algorithm with a real PRM server, not a good PRM.
PRM_NAME = "smollm2-prm"
PRM_STEP_TAG_ID = 5
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


def load_samples() -> list[dict[str, Any]]:
    """The stored samples, one record a problem, by seed."""
    with SAMPLES.open() as lines:
        return sorted((json.loads(line) for line in lines), key=lambda r: r["seed"])


def load_particles() -> dict[str, dict[int, dict[str, Any]]]:
    """The served particle-filtering answers stored so far: per row, per problem seed."""
    rows: dict[str, dict[int, dict[str, Any]]] = {}
    if PARTICLES.exists():
        for line in PARTICLES.read_text().splitlines():
            record = json.loads(line)
            rows.setdefault(record["label"], {})[record["seed"]] = record
    return rows
