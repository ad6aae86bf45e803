"""Thinking controls, measured: full thinking against a thinking budget (budget forcing, after
s1) and probing (early exit once probes agree, after Dynasor-CoT), per problem, interleaved.

Run by hand, never in the tests:

    # the vLLM stand-in thinking from a script (seconds): the mechanism
    .venv/bin/python -m bench.thinking --plot docs/bench/thinking-standin.png
    # the embedded SmolLM2-135M (a few minutes on 2 CPU cores): NOT a reasoning model
    .venv/bin/python -m bench.thinking --system smollm2 --plot docs/bench/thinking-smollm2.png
    # a reasoning model behind a running gateway (vLLM with --reasoning-parser, on a GPU)
    .venv/bin/python -m bench.thinking --system reasoning --gateway-url http://127.0.0.1:8080

On `bench.accuracy`'s problems (its three tiers), each setting answers every problem, through
`majority_vote` with one candidate (its trace counts each candidate's thinking apart from its
answer; `--n` votes over more), with `reasoning_params.thinking` set as the setting says. It
prints, as markdown: accuracy with 95 % paired bootstrap intervals of the difference against
full thinking (and the problems gained and lost), thinking tokens per problem (median) and in
total, probe tokens, the tokens saved against full thinking (thinking alone, and with the
probes' own tokens) with their intervals, the most any candidate thought against its bound (the
budget, plus one probe interval with probes), and PASS/MISS for the targets: probing within 2
points of full thinking's accuracy with at least 25 % fewer thinking tokens (probes counted),
and every budget held. `--plot FILE` writes accuracy against tokens as a PNG.

Systems (`--system`), each with the sizes that suit it (`presets`):

- `standin`: the checking vLLM stand-in reading a script of one thought per problem
  (`script`), this checkout's gateway in front of it; deterministic, a few seconds.
- `smollm2`: this checkout's gateway on its default backend, the embedded SmolLM2-135M, through
  `/v1/completions` with a one-shot raw prompt that ends in an open `<think>` block (the
  gateway takes it as thinking begun). SmolLM2 is not a reasoning model: its figures show the
  mechanism on a real model's text, not reasoning gains.
- `reasoning`: a running gateway (`--gateway-url`) in front of a reasoning model, e.g. vLLM
  serving Qwen3 with `--reasoning-parser qwen3`; chat requests, larger sizes.

Modules: `presets` (settings, systems), `script` (the stand-in's thoughts), `servers`,
`asking` (one request and what it spent), `measure` (the interleaved run), `report` (the
table and targets), `plot`.
"""

__all__: list[str] = []
