"""Starting and stopping real worker processes (``tests/support/engine_subprocess.py``) for process-level tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class EngineSubprocess:
    """One ``python -m tests.support.engine_subprocess`` child; its output goes to ``log_path``."""

    def __init__(self, dsn: str, spec: dict[str, Any], log_path: Path) -> None:
        self.dsn = dsn
        self.spec = spec
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        with self.log_path.open("wb") as out:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.engine_subprocess", self.dsn, json.dumps(self.spec)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("the worker process was not started")
        return self._process

    @property
    def started(self) -> bool:
        return self._process is not None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self, limit: int = 4000) -> str:
        """The last ``limit`` characters the process printed, for assertion messages."""
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except FileNotFoundError:
            return ""

    async def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (graceful drain), then SIGKILL if it has not exited within ``timeout``; returns the exit code."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        if not await self._exited_within(timeout):
            self.process.kill()
            await self._exited_within(5.0)
        code = self.process.poll()
        if code is None:
            raise AssertionError(f"worker process {self.pid} survived SIGKILL")
        return code

    async def _exited_within(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.process.poll() is None:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True


@contextlib.asynccontextmanager
async def engine_subprocesses(
    dsn: str, spec: dict[str, Any], count: int, log_dir: Path
) -> AsyncIterator[list[EngineSubprocess]]:
    """Starts ``count`` worker processes; any still running on the way out are stopped (and killed if need be)."""
    workers = [EngineSubprocess(dsn, spec, log_dir / f"worker-{n}.log") for n in range(count)]
    try:
        for worker in workers:
            worker.start()
        yield workers
    finally:
        await asyncio.gather(*(w.stop() for w in workers if w.started and w.alive))


def describe(workers: list[EngineSubprocess]) -> str:
    """The recent output of every process, for the message of a failed assertion."""
    return "\n".join(f"--- worker {w.pid} (exit {w.process.poll()}):\n{w.output()}" for w in workers)
