"""Failover to first job running again, with the shipped default configuration.

    .venv/bin/python -m benchmarks.failover [--rounds 2] [--json]

The daemon (default settings: worker_timeout 30 s, so command_timeout 7.5 s) reaches a private embedded
PostgreSQL through a TCP proxy. Each round black-holes every connection the proxy holds (no RST, no EOF; new
connections go through), once while the daemon drains a queue and once while it is idle with a job enqueued right
after the cut, and measures how long until a job claimed after the cut started (database clock). At the end
every job must be in the log as successful.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.chaos import PGQD, REPO, through, unix_socket
from benchmarks.common import run_until_signalled
from pgqd import Client, JobSpec, install
from pgqd.backend.bounded import DatabaseTimeouts
from pgqd.config.model import WorkersConfig
from pgqd.daemon.embedded import EmbeddedServer
from pgqd.daemon.logs import configure_logging
from tests.support.tcp_proxy import TcpProxy

CONFIG = """
[metrics]
enabled = false

[logging]
level = "warning"
format = "json"

[workers]
resources = "benchmarks.handlers:chaos_resources"

[entrypoints.work]
handler = "benchmarks.handlers:chaos_record"
"""


async def resumed_after(conn: Any, cut_at: Any, timeout: float) -> float:
    """Seconds from the cut to the start of the first job claimed after it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seconds = await conn.fetchval(
            "SELECT extract(epoch FROM min(started_at) - $1) FROM pgqd_log WHERE started_at > $1", cut_at
        )
        if seconds is not None:
            return round(float(seconds), 2)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no job started within {timeout}s of the cut")


async def wait_logged(conn: Any, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await conn.fetchval("SELECT count(*) FROM pgqd_log") < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} jobs finished within {timeout}s")
        await asyncio.sleep(0.05)


async def run(rounds: int, folder: Path) -> dict[str, Any]:
    server = EmbeddedServer(folder / "pgdata")
    dsn = server.start()
    proxy = TcpProxy.to_unix_socket(unix_socket(dsn)).start()
    daemon: subprocess.Popen[bytes] | None = None
    try:
        conn = await asyncpg.connect(dsn)
        await install(conn)
        await conn.execute(
            "CREATE TABLE chaos_runs (job_id bigint, attempt int, pid int, at timestamptz DEFAULT now())"
        )
        config = folder / "failover.toml"
        config.write_text(CONFIG)
        env = {**os.environ, "PGQD_DSN": through(proxy, dsn), "CHAOS_RECORD_DSN": dsn}
        with (folder / "daemon.log").open("wb") as log:
            daemon = subprocess.Popen([PGQD, "--config", str(config)], cwd=REPO, env=env, stdout=log, stderr=log)
        client = Client(conn)
        total = 0
        busy: list[float] = []
        idle: list[float] = []
        for _ in range(rounds):
            jobs = 20_000
            await client.enqueue_many([JobSpec("work", {"work_ms": 50}) for _ in range(jobs)])
            await wait_logged(conn, total + jobs // 5, 120)
            proxy.blackhole_open()
            cut_at = await conn.fetchval("SELECT clock_timestamp()")
            busy.append(await resumed_after(conn, cut_at, 120))
            total += jobs
            await wait_logged(conn, total, 300)

            await asyncio.sleep(1)
            proxy.blackhole_open()
            cut_at = await conn.fetchval("SELECT clock_timestamp()")
            await client.enqueue("work", {"work_ms": 0})
            idle.append(await resumed_after(conn, cut_at, 120))
            total += 1
            await wait_logged(conn, total, 120)
        statuses = {r[0]: r[1] for r in await conn.fetch("SELECT status::text, count(*) FROM pgqd_log GROUP BY 1")}
        left = await conn.fetchval("SELECT count(*) FROM pgqd_jobs")
        await conn.close()
        worker_timeout = WorkersConfig().worker_timeout
        return {
            "worker_timeout_s": worker_timeout,
            "command_timeout_s": DatabaseTimeouts.derive(worker_timeout).command,
            "target_s": worker_timeout + 5,
            "failover_mid_drain_to_first_job_s": busy,
            "failover_while_idle_to_first_job_s": idle,
            "jobs": total,
            "final_statuses": statuses,
            "jobs_left_in_queue": left,
            "verdict": "ok"
            if statuses == {"successful": total} and left == 0 and max(busy + idle) <= worker_timeout + 5
            else "FAILED",
        }
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()
        proxy.stop()
        server.stop()


def main() -> None:
    configure_logging("warning", "json")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the result on one line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pgqd-failover-") as folder:
        result = run_until_signalled(run(args.rounds, Path(folder)))
    print(json.dumps(result, indent=None if args.json else 2))
    sys.exit(0 if result["verdict"] == "ok" else 1)


if __name__ == "__main__":
    main()
