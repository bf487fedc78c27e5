"""Enqueue rate through the public client: batches of 1,000 (one statement each) and single jobs.

.venv/bin/python -m benchmarks.enqueue [--jobs 50000] [--single 2000] [--runs 3]
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from benchmarks.common import environment, fresh_database, median_of, parser, report
from pgqd import Client, JobSpec


async def batched(dsn: str, jobs: int, batch: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        client = Client(conn)
        await client.enqueue("warm-up")
        specs = [JobSpec("bench", b"{}") for _ in range(batch)]
        began = time.perf_counter()
        for _ in range(jobs // batch):
            await client.enqueue_many(specs)
        return (jobs // batch) * batch / (time.perf_counter() - began)
    finally:
        await conn.close()


async def single(dsn: str, jobs: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        client = Client(conn)
        await client.enqueue("warm-up")
        began = time.perf_counter()
        for _ in range(jobs):
            await client.enqueue("bench", b"{}")
        return jobs / (time.perf_counter() - began)
    finally:
        await conn.close()


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--jobs", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=1_000)
    p.add_argument("--single", type=int, default=2_000)
    args = p.parse_args()
    batched_runs: list[float] = []
    single_runs: list[float] = []
    for _ in range(args.runs):
        async with fresh_database(args.server) as dsn:
            batched_runs.append(await batched(dsn, args.jobs, args.batch))
            single_runs.append(await single(dsn, args.single))
    results: list[dict[str, Any]] = [
        {"scenario": f"enqueue_many, batches of {args.batch}", "jobs": args.jobs, "jobs_per_s": median_of(batched_runs),
         "runs": [round(r) for r in batched_runs]},
        {"scenario": "enqueue, one job per call", "jobs": args.single, "jobs_per_s": median_of(single_runs),
         "runs": [round(r) for r in single_runs]},
    ]  # fmt: skip
    report("enqueue", results, await environment(args.server), args.json)


if __name__ == "__main__":
    asyncio.run(main())
