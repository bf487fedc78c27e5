"""Running the worker engine inside a test: in the background or until it has drained the queue.

For waiting on a condition with a deadline, see ``tests.support.waiting.wait_until``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from pgqd import Worker, WorkerSettings


def fast_settings(**overrides: Any) -> WorkerSettings:
    """Worker settings for tests: short polls, timeouts and grace periods, so nothing waits for long."""
    values: dict[str, Any] = {"poll_interval": 0.2, "worker_timeout": 2.0, "shutdown_timeout": 2.0}
    values.update(overrides)
    return WorkerSettings(**values)


@contextlib.asynccontextmanager
async def running_worker(worker: Worker, *, grace: float = 1.0, timeout: float = 10.0) -> AsyncIterator[Worker]:
    """Serves jobs with ``worker.run()`` in the background for the body of the ``async with``, then stops it
    with ``grace`` seconds for running jobs and waits (at most ``timeout`` seconds) for ``run()`` to return.

    A worker that crashed re-raises its exception on the way out.
    """
    task = asyncio.create_task(worker.run(), name="pgqd-test-worker")
    try:
        yield worker
    finally:
        worker.stop(grace)
        await asyncio.wait_for(task, timeout)


async def drain(worker: Worker, timeout: float = 15.0) -> None:
    """Runs ``worker`` until nothing is eligible and nothing runs, failing after ``timeout`` seconds."""
    await asyncio.wait_for(worker.run(drain=True), timeout)
