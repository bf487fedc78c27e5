"""procrastinate's side of compare.py: the producer, through ``defer_async`` and ``batch_defer_async``.

Runs with the Python of procrastinate's own virtualenv (never imported by pgqd); the app connects to
``$BENCH_DSN``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from benchmarks.runners.procrastinate_app import app, noop, stamp_start
from benchmarks.runners.protocol import BATCH_ARGUMENTS, run


class ProcrastinateProducer:
    async def batch(self, count: int, entrypoint: str = "noop") -> None:
        if entrypoint != "noop":
            raise ValueError("this runner's app has the tasks noop and stamp only")
        await noop.batch_defer_async(*(BATCH_ARGUMENTS for _ in range(count)))

    async def one(self, entrypoint: str, sequence: int) -> None:
        if entrypoint == "stamp":
            await stamp_start.defer_async(sequence=sequence)
        else:
            await noop.defer_async()


@contextlib.asynccontextmanager
async def producer(dsn: str) -> AsyncIterator[ProcrastinateProducer]:
    async with app.open_async():  # the app reads the same DSN from $BENCH_DSN
        yield ProcrastinateProducer()


if __name__ == "__main__":
    run(producer)
