"""Pickup latency of an idle daemon: single jobs spaced apart, from the enqueue call to the handler's start.

    .venv/bin/python -m benchmarks.latency [--jobs 300] [--spacing 0.02]

Both ends are read on this machine's clock (the database runs here: the log's started_at is the moment the
job was picked plus the worker's own delay until the handler began).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg

from benchmarks.common import environment, fresh_database, parser, report, run_until_signalled
from benchmarks.daemon import running_daemon
from pgqd import Client


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def one_run(server: str, jobs: int, spacing: float, processes: int) -> list[float]:
    async with fresh_database(server) as dsn, running_daemon(dsn, processes, batch=10):
        conn = await asyncpg.connect(dsn)
        try:
            client = Client(conn)
            await client.enqueue("warm-up")
            sent: dict[int, datetime] = {}
            for _ in range(jobs):
                at = datetime.now(UTC)
                job_id = await client.enqueue("noop")
                assert job_id is not None
                sent[job_id] = at
                await asyncio.sleep(spacing)
            deadline = time.monotonic() + 30
            while await conn.fetchval("SELECT count(*) FROM pgqd_log") < jobs:
                if time.monotonic() > deadline:
                    raise TimeoutError("jobs did not finish")
                await asyncio.sleep(0.05)
            rows = await conn.fetch("SELECT job_id, started_at FROM pgqd_log")
        finally:
            await conn.close()
    return [(row["started_at"] - sent[row["job_id"]]).total_seconds() * 1000 for row in rows if row["job_id"] in sent]


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--jobs", type=int, default=300)
    p.add_argument("--spacing", type=float, default=0.02)
    p.add_argument("--processes", type=int, default=1)
    args = p.parse_args()
    runs = [await one_run(args.server, args.jobs, args.spacing, args.processes) for _ in range(args.runs)]

    def med(share: float) -> float:
        return round(statistics.median(percentile(r, share) for r in runs), 2)

    results: list[dict[str, Any]] = [
        {"jobs": args.jobs, "spacing_ms": args.spacing * 1000, "p50_ms": med(0.5), "p95_ms": med(0.95),
         "p99_ms": med(0.99), "max_ms": round(statistics.median(max(r) for r in runs), 2)}
    ]  # fmt: skip
    report("pickup latency", results, await environment(args.server), args.json)


if __name__ == "__main__":
    run_until_signalled(main())
