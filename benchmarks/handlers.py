"""Handlers the benchmarks run through the real daemon."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from benchmarks.runners.mix import limited_run
from benchmarks.runners.protocol import stamp as stamp_start
from pgqd import Context, Job


async def noop(job: Job) -> None:
    """Does nothing, so what is measured is the queue itself."""


@contextlib.asynccontextmanager
async def chaos_resources() -> AsyncIterator[Any]:
    """A small pool for recording executions; it reconnects on its own after the database restarts."""
    dsn = os.environ.get("CHAOS_RECORD_DSN") or os.environ["PGQD_DSN"]  # a direct line, when pgqd's is cut
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


async def chaos_record(job: Job, ctx: Context) -> None:
    """Records this execution (job, attempt, process), then works for a few milliseconds."""
    await ctx.resources.execute(
        "INSERT INTO chaos_runs (job_id, attempt, pid) VALUES ($1, $2, $3)", job.id, job.attempts, os.getpid()
    )
    work_ms = float((job.json() or {}).get("work_ms", 20))
    await asyncio.sleep(random.uniform(0.0, work_ms / 1000))


async def chaos_poison(job: Job, ctx: Context) -> None:
    """Records this execution, then ends its worker process at once: the poison job of the chaos run."""
    await ctx.resources.execute(
        "INSERT INTO chaos_runs (job_id, attempt, pid) VALUES ($1, $2, $3)", job.id, job.attempts, os.getpid()
    )
    os._exit(1)


async def stamp(job: Job) -> None:
    """Records when it started (for pickup latency); the payload is the job's sequence number."""
    stamp_start(job.payload.decode())


async def limited(job: Job) -> None:
    """A limited entrypoint's job (benchmarks/runners/mix.py): works a few milliseconds and records its run."""
    await limited_run(job.entrypoint, job.picked_at.timestamp())
