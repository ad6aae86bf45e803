"""Answer equivalence by math-verify, in worker processes that can be killed.

math-verify is sympy underneath, and an answer such as `\\left(10^{9}\\right)!` keeps it busy
for minutes; a thread doing that can be neither stopped nor waited for at exit. So comparisons
run in a small pool of worker processes (`verifiers.equivalence_worker`), each with its address
space capped, its CPU time capped per job, and its wall time bounded by `timeout_s`: a job past
it is killed with its process, a fresh process takes its place, and the caller is told the
comparison was cut off (it then groups by normalised text alone, and says so). Answers longer
than `max_chars` are never sent: they are compared as text. The event loop only writes and
reads a line of JSON per job.

Built once per app (its lifespan closes it); processes start on first use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from verifiers.equivalence_worker import READY

__all__ = ["EquivalencePool"]

logger = logging.getLogger(__name__)

# Importing math-verify (sympy) takes a few seconds on a busy CPU; not charged to a job.
_START_TIMEOUT_S = 60.0


@dataclass
class _Slot:
    """One worker's place in the pool: its process once started."""

    process: asyncio.subprocess.Process | None = None


class EquivalencePool:
    """Merges equal answers with math-verify in `workers` killable processes."""

    def __init__(
        self,
        workers: int = 1,
        timeout_s: float = 5.0,
        cpu_s: int = 5,
        memory_bytes: int = 1 << 30,
        max_chars: int = 256,
    ) -> None:
        self.timeout_s = timeout_s
        self.cpu_s = cpu_s
        self.memory_bytes = memory_bytes
        self.max_chars = max_chars
        self._idle: asyncio.Queue[_Slot] = asyncio.Queue()
        self._slots = [_Slot() for _ in range(workers)]
        for slot in self._slots:
            self._idle.put_nowait(slot)
        self.killed = 0  # jobs cut off, for the logs and tests

    async def merge(self, answers: Sequence[str]) -> list[list[int]] | None:
        """The indices of `answers` grouped where math-verify finds them equal, or None when
        the comparison was cut off (too slow or too big, every worker busy for `timeout_s`, or
        the worker failed)."""
        if any(len(a) > self.max_chars for a in answers):
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                slot = await self._idle.get()
        except TimeoutError:
            logger.warning("every math-verify worker stayed busy for %.1f s", self.timeout_s)
            return None
        answered = False
        try:
            if slot.process is None or slot.process.returncode is not None:
                slot.process = await self._start()
            async with asyncio.timeout(self.timeout_s):
                merged = await self._ask(slot.process, answers)
            answered = True
            return merged
        except TimeoutError:
            logger.warning("math-verify was stopped after %.1f s", self.timeout_s)
            return None
        finally:
            if not answered:
                # Cut off mid-job (timeout, cancellation, a dead worker): its state is unknown.
                self.killed += 1
                await _kill(slot)
            self._idle.put_nowait(slot)

    async def aclose(self) -> None:
        """Stop every worker."""
        for slot in self._slots:
            await _kill(slot)

    async def _start(self) -> asyncio.subprocess.Process:
        """A fresh worker, once it has imported math-verify (not charged to a job's time)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "verifiers.equivalence_worker",
            str(self.memory_bytes),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert process.stdout is not None
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                line = await process.stdout.readline()
            if line.decode().strip() != READY:
                raise TimeoutError("the math-verify worker did not start")
        except BaseException:
            process.kill()
            await process.wait()
            raise
        return process

    async def _ask(
        self, process: asyncio.subprocess.Process, answers: Sequence[str]
    ) -> list[list[int]] | None:
        assert process.stdin is not None and process.stdout is not None
        job = {"answers": list(answers), "cpu_s": self.cpu_s}
        process.stdin.write(json.dumps(job).encode() + b"\n")
        await process.stdin.drain()
        line = await process.stdout.readline()
        if not line:
            # Killed by its CPU or memory cap.
            raise TimeoutError("the math-verify worker exited")
        reply = json.loads(line)
        merged: list[list[int]] | None = reply.get("merged")
        return merged


async def _kill(slot: _Slot) -> None:
    process, slot.process = slot.process, None
    if process is not None and process.returncode is None:
        process.kill()
        await process.wait()
