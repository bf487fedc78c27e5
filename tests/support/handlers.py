"""Handlers run by the worker processes of the process-level tests.

Each records its run in the ``test_runs`` table (create it with ``RUNS_TABLE``) on the connection pool the worker
passes as ``ctx.resources``; times come from the database clock, so runs in different processes compare.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from pgqd import Context, Job

RUNS_TABLE = """
CREATE TABLE test_runs (
    job_id  bigint NOT NULL,
    pid     integer NOT NULL,
    started timestamptz NOT NULL,
    ended   timestamptz NOT NULL
)
"""


def _seconds(job: Job) -> float:
    payload: Any = job.json()
    return float(payload.get("sleep", 0.0)) if isinstance(payload, dict) else 0.0


async def timed_sleep(job: Job, ctx: Context) -> None:
    """Sleeps for the payload's ``sleep`` seconds and records when the run started and ended."""
    pool = ctx.resources
    started = await pool.fetchval("SELECT clock_timestamp()")
    await asyncio.sleep(_seconds(job))
    await pool.execute(
        "INSERT INTO test_runs (job_id, pid, started, ended) VALUES ($1, $2, $3, clock_timestamp())",
        job.id,
        os.getpid(),
        started,
    )


async def record_start(job: Job, ctx: Context) -> None:
    """Does nothing but record that it started."""
    await ctx.resources.execute(
        "INSERT INTO test_runs (job_id, pid, started, ended) VALUES ($1, $2, clock_timestamp(), clock_timestamp())",
        job.id,
        os.getpid(),
    )


async def nap(job: Job) -> None:
    """Sleeps for the payload's ``sleep`` seconds and records nothing (the log says it ran)."""
    await asyncio.sleep(_seconds(job))


HANDLERS: dict[str, Callable[..., Awaitable[None]]] = {
    "timed_sleep": timed_sleep,
    "record_start": record_start,
    "nap": nap,
}
