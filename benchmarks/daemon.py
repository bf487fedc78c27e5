"""Running the real daemon for a benchmark, in its shipped default configuration.

The config sets only what a benchmark varies (processes, batch size, jobs in flight) and the entrypoints;
everything else is pgqd's default: metrics recorded and served, logging at "info" in the default format.
The one change is the metrics address: a free loopback port rather than 9464, which another daemon on the
machine may hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import asyncpg

from benchmarks.common import concurrency_for
from benchmarks.runners.mix import Entrypoint

REPO = Path(__file__).resolve().parents[1]
PGQD = str(Path(sys.executable).with_name("pgqd"))

CONFIG = """
[workers]
processes = {processes}
concurrency = {concurrency}
batch_size = {batch}

[metrics]
listen = "127.0.0.1:{metrics_port}"
"""

ENTRYPOINTS = """
[entrypoints.noop]
handler = "benchmarks.handlers:noop"

[entrypoints.stamp]
handler = "benchmarks.handlers:stamp"
"""


def entrypoints_toml(mix: tuple[Entrypoint, ...]) -> str:
    """A mix's entrypoints (benchmarks/runners/mix.py) as the config's sections."""
    sections = []
    for e in mix:
        lines = [f"[entrypoints.{e.name}]", f'handler = "benchmarks.handlers:{"limited" if e.runs_slow else "noop"}"']
        if e.concurrency_limit:
            lines.append(f"concurrency_limit = {e.concurrency_limit}")
        if e.rate_per_s:
            lines.append(f'rate_limit = "{e.rate_per_s:g}/s"')
        sections.append("\n".join(lines))
    return "\n" + "\n\n".join(sections) + "\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running_processes(
    commands: list[list[str]],
    env: Mapping[str, str],
    ready: Callable[[], asyncio.Future[bool]],
    timeout: float = 60,
    keep_log: Path | None = None,
) -> AsyncIterator[None]:
    """Runs ``commands`` (from the repository root, output to a log file) until the block ends.

    Waits until ``ready()`` says so; fails with the end of the log if a process exits or the wait times out.
    With ``keep_log`` the log is copied there once the processes have ended.
    """
    with tempfile.TemporaryDirectory() as folder:
        log_path = Path(folder) / "output.log"
        with open(log_path, "wb") as log:
            processes = [
                subprocess.Popen(command, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
                for command in commands
            ]
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not await ready():
                if any(p.poll() is not None for p in processes) or loop.time() > deadline:
                    tail = log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{commands[0][0]} did not come up:\n{tail}")
                await asyncio.sleep(0.05)
            yield
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
            if keep_log is not None:
                shutil.copyfile(log_path, keep_log)


@contextlib.asynccontextmanager
async def running_daemon(
    dsn: str,
    processes: int,
    batch: int,
    concurrency: int | None = None,
    env: Mapping[str, str] | None = None,
    extra: str = "",
    mix: tuple[Entrypoint, ...] | None = None,
    keep_log: Path | None = None,
) -> AsyncIterator[None]:
    """The daemon on ``dsn`` until the block ends; waits until its workers have registered and it serves
    /metrics. ``concurrency`` defaults to ``concurrency_for(batch)``; ``extra`` is TOML added to the config, for
    a benchmark that sets a default aside to measure what it does; ``mix`` replaces the entrypoints ``noop`` and
    ``stamp``; ``keep_log`` keeps its log (JSON lines)."""
    port = free_port()
    conn = await asyncpg.connect(dsn)
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "bench.toml"
        config.write_text(
            CONFIG.format(
                processes=processes, concurrency=concurrency or concurrency_for(batch), batch=batch, metrics_port=port
            )
            + (ENTRYPOINTS if mix is None else entrypoints_toml(mix))
            + extra
        )

        async def ready() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM pgqd_workers") >= processes)

        try:
            command = [PGQD, "--config", str(config)]
            async with running_processes([command], {**(env or {}), "PGQD_DSN": dsn}, ready, keep_log=keep_log):
                await asyncio.to_thread(check_metrics_served, port)
                yield
        finally:
            await conn.close()


def check_metrics_served(port: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}")
