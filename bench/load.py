"""The load generator: a process of its own that drives a URL and measures every answer.

`LoadGenerator` runs one `LoadSpec` at a time in a worker process (an aiohttp client with a
pooled connector), so its CPU is not charged to the benchmark's bookkeeping; `LoadResult` holds
every request's latency and status, and what the answers and error bodies looked like.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import multiprocessing
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.procfs import cpu_seconds, rss_kib

__all__ = ["LoadGenerator", "LoadResult", "LoadSpec", "is_openai_error", "percentile"]


@dataclass(frozen=True)
class LoadSpec:
    """`requests` POSTs of `body` to `url`, `concurrency` at a time, after `warmup` more on the
    same connections (so the measured ones see a steady state, as a real client's would);
    the CPU of `watch` (pids) and the stub's call count at `stats_url` are read around the
    measured ones."""

    url: str
    body: dict[str, Any]
    concurrency: int
    requests: int
    timeout_s: float = 120.0
    warmup: int = 0
    watch: tuple[int, ...] = ()
    stats_url: str | None = None


@dataclass
class LoadResult:
    """What the load generator saw: one (status, seconds) per request, 0 for no answer."""

    spec: LoadSpec
    elapsed_s: float
    samples: list[tuple[int, float]]
    # Non-200 answers whose body is not an OpenAI error object, a few of them verbatim.
    malformed_errors: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    # 200s without a choices[0].message.content string.
    malformed_ok: int = 0
    retry_after: Counter[int] = field(default_factory=Counter)
    exceptions: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    # CPU seconds of each watched pid, and the stub's calls, over the measured requests.
    cpu_s: dict[int, float] = field(default_factory=dict)
    calls: int = 0

    @property
    def statuses(self) -> Counter[int]:
        return Counter(status for status, _ in self.samples)

    @property
    def ok(self) -> int:
        return self.statuses[200]

    @property
    def rate(self) -> float:
        return len(self.samples) / self.elapsed_s if self.elapsed_s else 0.0

    def latencies_ms(self, status: int | None = 200) -> list[float]:
        return [s * 1000 for code, s in self.samples if status is None or code == status]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]


def is_openai_error(body: Any) -> bool:
    """`{"error": {"message", "type", "param", "code"}}` with a string message and type."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return False
    error = body["error"]
    return (
        {"message", "type", "param", "code"} <= set(error)
        and isinstance(error["message"], str)
        and isinstance(error["type"], str)
    )


async def _drive(spec: LoadSpec) -> LoadResult:
    result = LoadResult(spec, 0.0, [])
    payload = json.dumps(spec.body).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    remaining = iter(range(spec.requests))
    connector = aiohttp.TCPConnector(limit=spec.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in remaining:
            started = time.perf_counter()
            try:
                async with session.post(spec.url, data=payload, headers=headers) as response:
                    raw = await response.read()
                    status = response.status
                    retry_after = "Retry-After" in response.headers
            except (aiohttp.ClientError, TimeoutError) as exc:
                result.samples.append((0, time.perf_counter() - started))
                result.exceptions[type(exc).__name__] += 1
                continue
            result.samples.append((status, time.perf_counter() - started))
            _inspect(result, status, raw, retry_after)

    async def calls(session: aiohttp.ClientSession) -> int:
        if spec.stats_url is None:
            return 0
        async with session.get(spec.stats_url) as response:
            return int((await response.json())["calls"])

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if spec.warmup:
            remaining = iter(range(spec.warmup))
            await asyncio.gather(*(worker(session) for _ in range(spec.concurrency)))
            result = LoadResult(spec, 0.0, [])
            remaining = iter(range(spec.requests))
        cpu = {pid: cpu_seconds(pid) for pid in spec.watch}
        calls_before = await calls(session)
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(spec.concurrency)))
        result.elapsed_s = time.perf_counter() - started
        result.cpu_s = {pid: cpu_seconds(pid) - used for pid, used in cpu.items()}
        result.calls = await calls(session) - calls_before
    return result


def _inspect(result: LoadResult, status: int, raw: bytes, retry_after: bool) -> None:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if status == 200:
        try:
            content = body["choices"][0]["message"]["content"]
        except (TypeError, KeyError, IndexError):
            content = None
        if isinstance(content, str):
            result.answers[content[:60]] += 1
        else:
            result.malformed_ok += 1
        return
    if retry_after:
        result.retry_after[status] += 1
    if not is_openai_error(body):
        result.malformed_errors += 1
        if len(result.malformed_examples) < 3:
            result.malformed_examples.append(f"{status}: {raw[:300]!r}")


def _run_load(spec: LoadSpec) -> LoadResult:
    try:
        import uvloop

        return uvloop.run(_drive(spec))
    except ImportError:
        return asyncio.run(_drive(spec))


class LoadGenerator(contextlib.AbstractContextManager["LoadGenerator"]):
    """A worker process that runs one `LoadSpec` at a time."""

    def __init__(self) -> None:
        # spawn, not fork: the worker starts clean of the parent's signal handlers and children.
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        )

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        if exc_type is not None:
            # A worker still driving load when we were interrupted is ended, not waited for.
            for process in processes:
                with contextlib.suppress(Exception):
                    process.kill()
        self._pool.shutdown(wait=exc_type is None, cancel_futures=True)

    def submit(self, spec: LoadSpec) -> concurrent.futures.Future[LoadResult]:
        return self._pool.submit(_run_load, spec)

    def run(self, spec: LoadSpec) -> LoadResult:
        return self.submit(spec).result()

    def run_sampling_rss(
        self, spec: LoadSpec, pid: int, every_s: float = 0.1
    ) -> tuple[LoadResult, list[int]]:
        """Runs `spec` while sampling the RSS of `pid` (and descendants) every `every_s`."""
        future = self.submit(spec)
        samples = [rss_kib(pid)]
        while True:
            try:
                result = future.result(timeout=every_s)
            except concurrent.futures.TimeoutError:
                samples.append(rss_kib(pid))
                continue
            samples.append(rss_kib(pid))
            return result, samples
