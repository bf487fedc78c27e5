"""Handlers for tests that run the real daemon. Each run is recorded in the table test_runs of the database
named by $PGQD_DSN, so tests can assert on what ran, where and when."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from pgqd import Context, Job

CREATE_RUNS = """
CREATE TABLE IF NOT EXISTS test_runs (
    job_id bigint NOT NULL, entrypoint text NOT NULL, attempt integer NOT NULL, pid integer NOT NULL,
    started timestamptz NOT NULL DEFAULT clock_timestamp(), ended timestamptz, tick text, key text
)
"""


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[dict[str, Any]]:
    if os.environ.get("PGQD_TEST_BROKEN_RESOURCES"):
        raise RuntimeError("the test resources are broken on purpose")
    # Fault tests cut the daemon's own connections; the handlers then record on a direct line, if given one.
    pool = await asyncpg.create_pool(
        os.environ.get("PGQD_TEST_RECORD_DSN") or os.environ["PGQD_DSN"], min_size=1, max_size=4
    )
    try:
        yield {"pool": pool}
    finally:
        await pool.close()


async def _record(ctx: Context, job: Job, seconds: float) -> None:
    pool = ctx.resources["pool"]
    await pool.execute(
        "INSERT INTO test_runs (job_id, entrypoint, attempt, pid, tick, key) VALUES ($1, $2, $3, $4, $5, $6)",
        job.id,
        job.entrypoint,
        job.attempts,
        os.getpid(),
        job.headers.get("pgqd-schedule-tick"),
        # A producer's own name for the job, where ids are not enough (a failover can hand one out twice).
        job.headers.get("test-key"),
    )
    await asyncio.sleep(seconds)
    await pool.execute(
        "UPDATE test_runs SET ended = clock_timestamp() WHERE job_id = $1 AND pid = $2", job.id, os.getpid()
    )


async def sleeper(job: Job, ctx: Context) -> None:
    """Sleeps for the number of seconds in the payload (default 0)."""
    await _record(ctx, job, float(job.text() or 0))


async def other(job: Job, ctx: Context) -> None:
    await _record(ctx, job, 0.0)


async def _record_start(ctx: Context, job: Job) -> None:
    await ctx.resources["pool"].execute(
        "INSERT INTO test_runs (job_id, entrypoint, attempt, pid) VALUES ($1, $2, $3, $4)",
        job.id,
        job.entrypoint,
        job.attempts,
        os.getpid(),
    )


async def loop_blocker(job: Job, ctx: Context) -> None:
    """Blocks the event loop (the bug the supervisor must catch) for the payload's seconds."""
    await _record_start(ctx, job)
    time.sleep(float(job.text() or 60))


async def kills_its_process(job: Job, ctx: Context) -> None:
    """Records its run, then ends its worker process at once, as a crash in a C extension would."""
    await _record_start(ctx, job)
    os._exit(1)


async def raises_system_exit(job: Job) -> None:
    raise SystemExit(3)


async def raises_keyboard_interrupt(job: Job) -> None:
    raise KeyboardInterrupt


def returns_unserialisable(job: Job) -> object:
    return {"when": object()}


async def measures_payload(job: Job) -> dict[str, Any]:
    payload = job.payload or b""
    return {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(), "pid": os.getpid()}
