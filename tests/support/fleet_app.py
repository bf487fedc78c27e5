"""Handlers of the fleet drills: every run records itself in ``fleet_runs``, on a link the drills never fault.

A run writes one row when it starts (with the moment its claim took the job, read from the job's row: that is
when a rate-limit token was spent) and sets ``ended`` when its work is done, both with the database's clock, so
runs on different hosts compare whatever a host's own clock says. It returns its run id, so the log's result
tells which run's outcome was kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from pgqd import Context, Job

RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS fleet_runs (
    run_id     bigserial PRIMARY KEY,
    job_id     bigint NOT NULL,
    entrypoint text NOT NULL,
    host       text NOT NULL,
    pid        integer NOT NULL,
    claimed_at timestamptz,
    started    timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended      timestamptz,
    tick       text
)
"""

RECORD_START = """
INSERT INTO fleet_runs (job_id, entrypoint, host, pid, tick, claimed_at)
SELECT $1, $2, $3, $4, $5, (SELECT picked_at FROM pgqd_jobs WHERE id = $1)
RETURNING run_id
"""


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[dict[str, Any]]:
    pool = await asyncpg.create_pool(os.environ["PGQD_FLEET_RECORD_DSN"], min_size=1, max_size=8)
    try:
        yield {"pool": pool, "host": os.environ["PGQD_FLEET_HOST"]}
    finally:
        await pool.close()


async def work(job: Job, ctx: Context) -> dict[str, Any]:
    """Records its start, sleeps for the payload's ``sleep`` seconds, records its end."""
    pool = ctx.resources["pool"]
    host = ctx.resources["host"]
    tick = job.headers.get("pgqd-schedule-tick")
    run_id = await pool.fetchval(RECORD_START, job.id, job.entrypoint, host, os.getpid(), tick)
    payload = job.json() if job.payload else {}
    await asyncio.sleep(float(payload.get("sleep", 0)) if isinstance(payload, dict) else 0.0)
    await pool.execute("UPDATE fleet_runs SET ended = clock_timestamp() WHERE run_id = $1", run_id)
    return {"run": run_id, "host": host}
