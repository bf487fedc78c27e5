"""Steady state: a producer enqueues as fast as it can for a while as the daemon consumes.

    .venv/bin/python -m benchmarks.steady [--seconds 20] [--processes 2] [--batch 10] [--enqueue-batch 100]

Reports jobs completed per second over the window and the backlog left at its end.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from benchmarks.common import environment, fresh_database, median_of, parser, report, run_until_signalled
from benchmarks.daemon import running_daemon
from pgqd import Client, JobSpec


async def produce(dsn: str, seconds: float, batch: int) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        client = Client(conn)
        specs = [JobSpec("noop") for _ in range(batch)]
        sent = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await client.enqueue_many(specs)
            sent += batch
        return sent
    finally:
        await conn.close()


async def one_run(server: str, seconds: float, processes: int, batch: int, enqueue_batch: int) -> dict[str, float]:
    async with fresh_database(server) as dsn, running_daemon(dsn, processes, batch):
        conn = await asyncpg.connect(dsn)
        try:
            window_start = await conn.fetchval("SELECT clock_timestamp()")
            sent = await produce(dsn, seconds, enqueue_batch)
            window_end = await conn.fetchval("SELECT clock_timestamp()")
            done = await conn.fetchval(
                "SELECT count(*) FROM pgqd_log WHERE finished_at BETWEEN $1 AND $2", window_start, window_end
            )
            backlog = await conn.fetchval("SELECT count(*) FROM pgqd_jobs")
        finally:
            await conn.close()
    span = (window_end - window_start).total_seconds()
    return {"enqueued_per_s": sent / span, "completed_per_s": done / span, "backlog": backlog}


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--enqueue-batch", type=int, default=100)
    args = p.parse_args()
    runs = [
        await one_run(args.server, args.seconds, args.processes, args.batch, args.enqueue_batch)
        for _ in range(args.runs)
    ]
    results: list[dict[str, Any]] = [
        {"processes": args.processes, "batch": args.batch, "seconds": args.seconds,
         "enqueued_per_s": median_of([r["enqueued_per_s"] for r in runs]),
         "completed_per_s": median_of([r["completed_per_s"] for r in runs]),
         "backlog_left": int(median_of([r["backlog"] for r in runs])),
         "runs": [round(r["completed_per_s"]) for r in runs]}
    ]  # fmt: skip
    report("steady state", results, await environment(args.server), args.json)


if __name__ == "__main__":
    run_until_signalled(main())
