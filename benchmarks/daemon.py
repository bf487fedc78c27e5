"""Running the real daemon for a benchmark: a config in a temporary folder, a subprocess, a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

REPO = Path(__file__).resolve().parents[1]
PGQD = str(Path(sys.executable).with_name("pgqd"))

CONFIG = """
[workers]
processes = {processes}
concurrency = {concurrency}
batch_size = {batch}
poll_interval = "1s"

[metrics]
enabled = false

[logging]
level = "warning"
format = "json"

[entrypoints.noop]
handler = "benchmarks.handlers:noop"
"""


@contextlib.asynccontextmanager
async def running_daemon(dsn: str, processes: int, batch: int, concurrency: int | None = None) -> AsyncIterator[None]:
    """The daemon on ``dsn`` until the block ends; waits until its workers have registered."""
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "bench.toml"
        config.write_text(
            CONFIG.format(processes=processes, concurrency=concurrency or max(2 * batch, 20), batch=batch)
        )
        daemon = subprocess.Popen(
            [PGQD, "--config", str(config)],
            cwd=REPO,
            env={**os.environ, "PGQD_DSN": dsn},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_for_workers(dsn, processes)
            yield
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(10)


async def wait_for_workers(dsn: str, count: int, timeout: float = 60) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await conn.fetchval("SELECT count(*) FROM pgqd_workers") < count:
            if loop.time() > deadline:
                raise TimeoutError("the daemon's workers did not register")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
