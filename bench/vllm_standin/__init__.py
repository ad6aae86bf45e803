"""One stand-in for vLLM's OpenAI-compatible server, for the tests and the benchmarks.

Its modules, by idea:

- `answers`: what its deterministic model writes, in vLLM's shapes (shared by every front end);
  `constrained`: tool calls and structured outputs.
- `checks`: what vLLM would accept and the gateway must send.
- `state`: options, counters, the record of requests, injected faults.
- Front ends: `checking` (FastAPI; records and checks every request; the tests run it in a
  thread with `inprocess.run_standin`), `raw` (bare asyncio, the benchmarks' ceiling) and
  `vllm_app` (FastAPI built like vLLM's API server), the last two run as a process by
  `python -m bench.vllm_standin` (`__main__`).
"""

__all__: list[str] = []
