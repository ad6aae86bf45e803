"""The embedded backend's throughput and fairness, against bare transformers on the same weights.

Run by hand (a few minutes; the converted weights must exist, i.e. the server has started once):

    .venv/bin/python -m bench.embedded
    .venv/bin/python -m bench.embedded --passes 5 --root /tmp/other-checkout

It starts this checkout's gateway (`python -m server` on the embedded default, or the checkout
given by `--root`) and measures, over HTTP only:

- (a) throughput: one chat completion of `n=16` sampled sequences × 32 tokens through the server,
  against a bare `generate` of the same 16 × 32 in this process, with transformers directly on
  the same converted weights in the precision the server logged. Passes are interleaved (server,
  bare, server, bare, ...) so drift on a shared machine spreads over both; medians and ranges.
  Target: the server keeps at least 0.7× the bare tok/s.
- (b) fairness: short requests (8 tokens, greedy) one after another, alone and then while one
  long request (`n=8` × 400 tokens) runs. Target: p50 during the long one within 3× of alone.

While one side is measured the other is idle, so they do not compete for the two cores.
"""

from __future__ import annotations

import argparse
import re
import shlex
import statistics
import sys
import threading
import time
from pathlib import Path

from bench.load import percentile
from bench.processes import Service, Services, free_port
from bench.stack import ROOT, checkout_path, post_json

MODEL = "SmolLM2-135M-Instruct"
# backends/smollm2.py's cache directory, re-derived: bench/ imports nothing from the project.
WEIGHTS = f"{MODEL}-bf16-v1"
QUESTION = "Explain step by step how to add 17 and 25."
THROUGHPUT_TARGET = 0.7
FAIRNESS_TARGET = 3.0
# A pause between the two sides, so one's OpenMP threads have stopped spinning when the other
# starts.
_SETTLE_S = 0.5


def weights_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("ttc-server")) / WEIGHTS


def start_server(services: Services, root: Path, extra: list[str]) -> Service:
    port = free_port()
    # -P: the checkout comes from PYTHONPATH, not from the current directory.
    argv = [sys.executable, "-P", "-m", "server", "--port", str(port), *extra]
    service = services.start(
        "ttc-embedded", argv, f"http://127.0.0.1:{port}", env=checkout_path(root)
    )
    service.wait_ready("/health", timeout_s=600)
    return service


def server_dtype(service: Service) -> str:
    """The precision the server says it chose; bf16 for servers that predate the choice."""
    found = re.search(r"embedded model runs in (\w+)", service.log_tail(200))
    return found.group(1) if found else "bfloat16"


# A long request on a shared CPU may take minutes.
_TIMEOUT_S = 600.0


def chat(url: str, n: int, max_tokens: int, temperature: float) -> tuple[float, int]:
    """Seconds and completion tokens of one chat completion."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": QUESTION}],
        "n": n,
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    started = time.perf_counter()
    answer = post_json(url + "/v1/chat/completions", body, _TIMEOUT_S)
    return time.perf_counter() - started, int(answer["usage"]["completion_tokens"])


class Bare:
    """transformers' own `generate` on the converted weights, in this process."""

    def __init__(self, dtype: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(weights_dir())
        self.model = AutoModelForCausalLM.from_pretrained(
            weights_dir(), dtype=getattr(torch, dtype)
        )
        self.model.eval()  # type: ignore[no-untyped-call]
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
        )
        self.ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.eos = sorted({self.tokenizer.eos_token_id, im_end})

    def sample(self, n: int, max_tokens: int) -> tuple[float, int]:
        """Seconds and generated tokens (up to and including each row's end) of one generate."""
        torch = self.torch
        inputs = torch.tensor([self.ids] * n)
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=max_tokens,
                do_sample=True,
                top_k=0,
                eos_token_id=self.eos,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        elapsed = time.perf_counter() - started
        tokens = 0
        for row in out[:, len(self.ids) :].tolist():
            ends = [i for i, t in enumerate(row) if t in self.eos]
            tokens += ends[0] + 1 if ends else len(row)
        return elapsed, tokens


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})"


def throughput(url: str, bare: Bare, passes: int) -> float:
    print("(a) n=16 x 32 sampled tokens: tok/s per pass (server, bare)")
    chat(url, 16, 32, 1.0)  # warm-up of both sides
    bare.sample(16, 32)
    served: list[float] = []
    direct: list[float] = []
    for i in range(passes):
        seconds, tokens = chat(url, 16, 32, 1.0)
        served.append(tokens / seconds)
        time.sleep(_SETTLE_S)
        seconds, tokens = bare.sample(16, 32)
        direct.append(tokens / seconds)
        time.sleep(_SETTLE_S)
        print(f"  pass {i + 1}: server {served[-1]:6.1f}  bare {direct[-1]:6.1f}")
    ratio = statistics.median(served) / statistics.median(direct)
    print(f"  server tok/s median (range): {summary(served)}")
    print(f"  bare   tok/s median (range): {summary(direct)}")
    print(
        f"  server / bare: {ratio:.2f} (target >= {THROUGHPUT_TARGET}: "
        f"{'holds' if ratio >= THROUGHPUT_TARGET else 'MISSED'})"
    )
    return ratio


def fairness(url: str, shorts: int) -> float:
    print(f"(b) {shorts} short requests (8 tokens, greedy) alone, then during an n=8 x 400 one")
    alone = [chat(url, 1, 8, 0.0)[0] for _ in range(shorts)]
    long_done = threading.Event()
    long_seconds: list[float] = []

    def run_long() -> None:
        body = {
            "model": MODEL,
            # Counting continues greedily for all 400 tokens instead of ending early.
            "prompt": "1, 2, 3, 4, 5,",
            "n": 8,
            "max_tokens": 400,
            "temperature": 0,
        }
        started = time.perf_counter()
        try:
            post_json(url + "/v1/completions", body, _TIMEOUT_S)
        finally:
            long_seconds.append(time.perf_counter() - started)
            long_done.set()

    thread = threading.Thread(target=run_long, daemon=True)
    thread.start()
    time.sleep(1.0)  # let its prefill and first steps start
    # Every short request sent while the long one runs counts, also one that waits it out.
    during: list[float] = []
    finished_during = 0
    while len(during) < shorts and not long_done.is_set():
        seconds, _ = chat(url, 1, 8, 0.0)
        during.append(seconds)
        finished_during += not long_done.is_set()
    thread.join()
    p50_alone = percentile(alone, 50)
    p50_during = percentile(during, 50)
    ratio = p50_during / p50_alone
    print(f"  alone : p50 {p50_alone:6.2f} s  ({min(alone):.2f}-{max(alone):.2f})")
    print(
        f"  during: p50 {p50_during:6.2f} s  ({min(during):.2f}-{max(during):.2f}); "
        f"{finished_during} of {len(during)} finished while the long one ran "
        f"({long_seconds[0]:.1f} s)"
    )
    print(
        f"  during / alone: {ratio:.2f} (target <= {FAIRNESS_TARGET}: "
        f"{'holds' if ratio <= FAIRNESS_TARGET else 'MISSED'})"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=5, help="interleaved throughput passes")
    parser.add_argument("--shorts", type=int, default=6, help="short requests per phase")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to serve")
    parser.add_argument(
        "--server-args", default="", help="more server flags, e.g. '--embedded.dtype float32'"
    )
    args = parser.parse_args()
    if not (weights_dir() / "model.safetensors").is_file():
        parser.error(f"no converted weights in {weights_dir()}: start the server once first")
    with Services() as services:
        service = start_server(services, args.root, shlex.split(args.server_args))
        dtype = server_dtype(service)
        print(f"server: {args.root}, weights in {dtype}; bare transformers in {dtype}")
        bare = Bare(dtype)
        throughput(service.url, bare, args.passes)
        fairness(service.url, args.shorts)


if __name__ == "__main__":
    main()
