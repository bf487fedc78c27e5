"""Handlers for the deployment tests: one that succeeds, one that sleeps, one that always fails, and one that
leaves an orphan process behind (the case an init process, PID 1 in a container, has to clean up after)."""

from __future__ import annotations

import asyncio
import subprocess

from pgqd import Job

# A duration no other process on the machine is likely to sleep for, so the test can find the orphans.
ORPHAN_SLEEP = "1.37"


async def succeed(job: Job) -> None:
    return None


async def pause(job: Job) -> None:
    """Sleeps for the payload's seconds: a job that is seen in flight."""
    await asyncio.sleep(float(job.text() or 0))


async def fail(job: Job) -> None:
    raise RuntimeError(f"job {job.id} fails on purpose")


def spawn_orphan(job: Job) -> None:
    """The shell exits at once; its background ``sleep`` outlives it and is re-parented to PID 1."""
    subprocess.run(["sh", "-c", f"sleep {ORPHAN_SLEEP} &"], check=True, timeout=10)
