"""What keeping finished jobs' payloads (``keep_payload``) costs the outcome write: the in-process drain rate of
no-op jobs with a payload, the entrypoint keeping payloads or not, runs interleaved.

    .venv/bin/python -m benchmarks.keep_payload [--jobs 20000] [--payload-bytes 200] [--batch 100] [--runs 3]

An entrypoint that does not keep payloads sends the statement an empty list, and its payloads are never read.
"""

from __future__ import annotations

import asyncio
import os
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
from benchmarks.drain import measured_rate
from benchmarks.handlers import noop
from pgqd import Client, Entrypoint, JobSpec, PostgresBackend, Worker, WorkerSettings


async def drain(server: str, jobs: int, payload: bytes, batch: int, keep: bool) -> float:
    async with fresh_database(server) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            client = Client(conn)
            for start in range(0, jobs, 5_000):
                await client.enqueue_many([JobSpec("noop", payload) for _ in range(min(5_000, jobs - start))])
            await conn.execute("VACUUM ANALYZE pgqd_jobs")
        finally:
            await conn.close()
        backend = await PostgresBackend.open(dsn, pool_size=3)
        try:
            settings = WorkerSettings(concurrency=concurrency_for(batch), batch_size=batch)
            entrypoint = Entrypoint("noop", noop, keep_payload=keep)
            await asyncio.wait_for(Worker(backend, [entrypoint], settings).run(drain=True), 600)
        finally:
            await backend.close()
        return await measured_rate(dsn, jobs)


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--payload-bytes", type=int, default=200)
    p.add_argument("--batch", type=int, default=100)
    args = p.parse_args()
    payload = b'{"data": "' + b"x" * max(args.payload_bytes - 12, 0) + b'"}'
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.runs):
        for keep in (False, True):  # interleaved, so that drift in the machine's load hits both alike
            runs[keep].append(await drain(args.server, args.jobs, payload, args.batch, keep))
    off = median_of(runs[False])
    results: list[dict[str, Any]] = [
        {"keep_payload": keep, "jobs": args.jobs, "payload_bytes": len(payload), "batch": args.batch,
         "jobs_per_s": median_of(rates), "ratio_to_off": round(median_of(rates) / off, 3),
         "runs": [round(r) for r in rates], "load_1m": round(os.getloadavg()[0], 1)}
        for keep, rates in runs.items()
    ]  # fmt: skip
    report("keep_payload", results, await environment(args.server), args.json)


if __name__ == "__main__":
    run_until_signalled(main())
