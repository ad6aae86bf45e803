"""What `bench/gateway.py` and `bench/faults.py` share: child processes, the stub, the load.

- `Services` starts child processes in their own process groups, waits for them to answer and
  stops every one of them on the way out, also on Ctrl-C, SIGTERM or an error.
- `start_stub` and `start_ttc` start `bench/stub_vllm.py` (with either of its front ends,
  `STUB_FRONTENDS`) and the gateway of this checkout.
- `LoadGenerator` drives a URL from a process of its own (an aiohttp client with a pooled
  connector), so its CPU is not charged to the benchmark's bookkeeping, and measures every
  request's latency and status.
- `cpu_seconds` and `rss_kib` read /proc for a process and its descendants.

Nothing here imports the project: the benchmarks talk to it over HTTP only.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import aiohttp

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
STUB_MODEL = "stub-model"
QUESTION = "What is 2 + 2? Answer with a number."
# bench/stub_vllm.py's --frontend: `raw` is the ceiling, `fastapi` costs what vLLM's server does.
STUB_FRONTENDS = ("raw", "fastapi")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ServiceError(RuntimeError):
    """A child process did not start, or died: the message carries its log's tail."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    """A child process in its own process group, logging to a file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, message: str) -> ServiceError:
        return ServiceError(
            f"{self.name}: {message}\n--- log tail ({self.log}) ---\n{self.log_tail()}"
        )

    def wait_ready(self, path: str, timeout_s: float = 60.0) -> None:
        """Poll GET url+path until it answers 200, the process dies or the time is up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise self.failure(f"exited with code {code} before it was ready")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise self.failure(f"not ready at {self.url + path} after {timeout_s:.0f} s")

    def stop(self) -> None:
        """SIGTERM to the whole group, then SIGKILL to whatever is left after a grace period."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # Workers a server forked may outlive their parent; the group still names them.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


class Services(contextlib.AbstractContextManager["Services"]):
    """Every child process of a run; all of them are stopped when the `with` block ends."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="ttc-bench-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._started: list[Service] = []
        self._previous_sigterm: Any = None

    def __enter__(self) -> Services:
        # SIGTERM ends the run like Ctrl-C does, so the `finally` stops the children.
        self._previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for service in reversed(self._started):
                service.stop()
        finally:
            signal.signal(signal.SIGTERM, self._previous_sigterm)

    def start(
        self, name: str, argv: Sequence[str], url: str, env: dict[str, str] | None = None
    ) -> Service:
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                # Its own session: Ctrl-C reaches only us, and killpg reaches its workers too.
                start_new_session=True,
            )
        service = Service(name, process, log, url)
        self._started.append(service)
        return service

    def stop(self, service: Service) -> None:
        service.stop()
        self._started.remove(service)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# --- the stub and this checkout's gateway -------------------------------------------------------


@dataclass
class Stub:
    service: Service
    frontend: str = "raw"

    @property
    def url(self) -> str:
        return self.service.url

    def stats(self) -> dict[str, Any]:
        return get_json(self.url + "/stats")

    def reset(self) -> None:
        post_json(self.url + "/stats/reset", {})


def start_stub(
    services: Services,
    latency_ms: float = 0.0,
    fail_503: float = 0.0,
    retry_after: bool = False,
    name: str = "stub",
    frontend: str = "raw",
) -> Stub:
    if frontend not in STUB_FRONTENDS:
        raise ValueError(f"stub front end {frontend!r} is not one of {STUB_FRONTENDS}")
    port = free_port()
    argv = [sys.executable, "-m", "bench.stub_vllm", "--port", str(port)]
    argv += ["--frontend", frontend]
    argv += ["--latency-ms", str(latency_ms), "--fail-503", str(fail_503)]
    if retry_after:
        argv.append("--retry-after")
    service = services.start(name, argv, f"http://127.0.0.1:{port}", env=checkout_path())
    service.wait_ready("/v1/models", timeout_s=20)
    return Stub(service, frontend)


def start_ttc(services: Services, stub: Stub, extra_args: str = "", name: str = "ttc") -> Service:
    """This checkout's gateway (`python -m server` with the checkout first on the path)."""
    port = free_port()
    argv = [sys.executable, "-m", "server", "--backend", "vllm", "--vllm-url", stub.url]
    argv += ["--model", STUB_MODEL, "--port", str(port), "--log-level", "warning"]
    argv += shlex.split(extra_args)
    service = services.start(name, argv, f"http://127.0.0.1:{port}", env=checkout_path())
    service.wait_ready("/v1/models", timeout_s=60)
    return service


def checkout_path(root: Path = ROOT) -> dict[str, str]:
    """The environment a child needs to import this checkout's packages from any directory."""
    return {
        "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    }


def ttc_body(n: int, max_tokens: int) -> dict[str, Any]:
    return {
        "model": STUB_MODEL,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": max_tokens,
        "reasoning_strategy": "majority_vote",
        "reasoning_params": {"n": n},
    }


def get_json(url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def post_json(url: str, body: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


# --- /proc --------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name is in parentheses and may hold spaces; the fields after it are fixed.
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent = int(_stat_fields(int(entry.name))[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, ()))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid`, its live descendants and the children they reaped."""
    ticks = 0
    for each in descendants(pid):
        with contextlib.suppress(OSError):
            fields = _stat_fields(each)
            # utime, stime, cutime, cstime are fields 14-17 of proc(5); 12-15 after the name.
            ticks += sum(int(v) for v in fields[11:15])
    return ticks / _CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` and its descendants, from VmRSS."""
    total = 0
    for each in descendants(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


# --- the load -----------------------------------------------------------------------------------


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


def choices(
    parser: argparse.ArgumentParser, value: str, known: Sequence[str], what: str
) -> list[str]:
    """A comma-separated option's items, each one of `known`, or the parser's usage error."""
    chosen = [item.strip() for item in value.split(",") if item.strip()]
    if unknown := sorted(set(chosen) - set(known)):
        parser.error(f"unknown {what} {unknown}; choose from {', '.join(known)}")
    return chosen


def run_script(main: Callable[[], int]) -> NoReturn:
    """Exit with `main`'s status; an interrupt or a service that failed to start ends the script
    with one line (every child process is stopped on the way out)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted: every child process was stopped")
    except ServiceError as exc:
        sys.exit(str(exc))
