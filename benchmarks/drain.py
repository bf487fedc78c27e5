"""Drain rate of pre-queued no-op jobs: one in-process worker, or the real daemon with N worker processes.

    .venv/bin/python -m benchmarks.drain --mode inprocess --batch 10 100 [--jobs 50000]
    .venv/bin/python -m benchmarks.drain --mode daemon --processes 1 2 --batch 10 100 [--jobs 50000]

The rate is jobs divided by the time from the first job's start to the last job's finish, as the log records
them, so start-up and shutdown are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import asyncpg

from benchmarks.common import (
    concurrency_for,
    environment,
    fresh_database,
    median_of,
    parser,
    report,
    run_until_signalled,
)
from benchmarks.daemon import running_daemon
from benchmarks.handlers import noop
from pgqd import Client, Entrypoint, JobSpec, PostgresBackend, Worker, WorkerSettings


async def fill(dsn: str, jobs: int, entrypoint: str = "noop") -> None:
    conn = await asyncpg.connect(dsn)
    try:
        client = Client(conn)
        for start in range(0, jobs, 5_000):
            await client.enqueue_many([JobSpec(entrypoint) for _ in range(min(5_000, jobs - start))])
        await conn.execute("VACUUM ANALYZE pgqd_jobs")
        # Every drain starts right after a checkpoint: otherwise one triggered by the WAL of the set-up (a
        # million rows in the growth benchmark) may land in the middle of the drain and be counted against it.
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):  # needs a superuser or pg_checkpoint
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def measured_rate(dsn: str, jobs: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, extract(epoch FROM max(finished_at) - min(started_at)) AS span FROM pgqd_log"
        )
    finally:
        await conn.close()
    if row["n"] != jobs:
        raise RuntimeError(f"{row['n']} of {jobs} jobs finished")
    return float(jobs / float(row["span"]))


async def wait_for_log(dsn: str, jobs: int, timeout: float) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await conn.fetchval("SELECT count(*) FROM pgqd_log") < jobs:
            if loop.time() > deadline:
                raise TimeoutError(f"jobs not finished within {timeout}s")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def in_process(server: str, jobs: int, batch: int) -> float:
    async with fresh_database(server) as dsn:
        await fill(dsn, jobs)
        backend = await PostgresBackend.open(dsn, pool_size=3)
        try:
            settings = WorkerSettings(concurrency=concurrency_for(batch), batch_size=batch)
            await asyncio.wait_for(Worker(backend, [Entrypoint("noop", noop)], settings).run(drain=True), 600)
        finally:
            await backend.close()
        return await measured_rate(dsn, jobs)


async def drain_with_daemon(dsn: str, jobs: int, batch: int, processes: int) -> float:
    """Fills the queue of ``dsn`` with ``jobs`` no-op jobs, drains it with the daemon, and returns the rate."""
    await fill(dsn, jobs)
    async with running_daemon(dsn, processes, batch):
        await wait_for_log(dsn, jobs, timeout=900)
    return await measured_rate(dsn, jobs)


async def through_daemon(server: str, jobs: int, batch: int, processes: int) -> float:
    async with fresh_database(server) as dsn:
        return await drain_with_daemon(dsn, jobs, batch, processes)


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--mode", choices=("inprocess", "daemon"), default="daemon")
    p.add_argument("--jobs", type=int, default=50_000)
    p.add_argument("--batch", type=int, nargs="+", default=[10, 100])
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    results: list[dict[str, Any]] = []
    processes = [1] if args.mode == "inprocess" else args.processes
    for procs, batch in itertools.product(processes, args.batch):
        runs = []
        for _ in range(args.runs):
            if args.mode == "inprocess":
                runs.append(await in_process(args.server, args.jobs, batch))
            else:
                runs.append(await through_daemon(args.server, args.jobs, batch, procs))
        results.append(
            {"mode": args.mode, "processes": procs, "batch": batch, "jobs": args.jobs,
             "jobs_per_s": median_of(runs), "runs": [round(r) for r in runs]}
        )  # fmt: skip
    report(f"drain ({args.mode})", results, await environment(args.server), args.json)


if __name__ == "__main__":
    run_until_signalled(main())
