"""PgQueuer's side of compare.py, run with the Python of its own virtualenv (never imported by pgqd).

The producer uses ``Queries.enqueue`` on one asyncpg connection (``AsyncpgDriver``), as PgQueuer's README
shows. The consumer (``consume BATCH CONCURRENCY``) does what ``pgq run ... --batch-size B
--max-concurrent-tasks C`` does, through ``pgqueuer.run``, the CLI's own entry point: the "pgqueuer" logger
at INFO, uvloop, every other setting at its default. (The CLI itself fails at start-up in 1.6.0 with the
current typer: its default log level reaches the logging set-up as a string.)
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator

import asyncpg
import pgqueuer
import uvloop
from pgqueuer import PgQueuer
from pgqueuer.core.logconfig import LogLevel, setup_fancy_logger
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries

from benchmarks.runners.mix import ENTRYPOINTS_ENV, Entrypoint, limited_run, loads
from benchmarks.runners.protocol import BATCH_PAYLOAD, DSN_ENV, run, stamp

# Lets compare.py tell this consumer's connections apart in pg_stat_activity, to know when it is up.
APPLICATION_NAME = "bench-pgqueuer"


class PgQueuerProducer:
    def __init__(self, queries: Queries) -> None:
        self.queries = queries

    async def batch(self, count: int, entrypoint: str = "noop") -> None:
        await self.queries.enqueue([entrypoint] * count, [BATCH_PAYLOAD] * count, [0] * count)

    async def one(self, entrypoint: str, sequence: int) -> None:
        await self.queries.enqueue(entrypoint, str(sequence).encode())


@contextlib.asynccontextmanager
async def producer(dsn: str) -> AsyncIterator[PgQueuerProducer]:
    conn = await asyncpg.connect(dsn)
    try:
        yield PgQueuerProducer(Queries(AsyncpgDriver(conn)))
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def create_pgqueuer() -> AsyncIterator[PgQueuer]:
    """The consumer's factory, shaped as PgQueuer's quick start shapes it."""
    conn = await asyncpg.connect(os.environ[DSN_ENV], server_settings={"application_name": APPLICATION_NAME})
    pgq = PgQueuer(AsyncpgDriver(conn))

    if ENTRYPOINTS_ENV in os.environ:
        register_mix(pgq, loads(os.environ[ENTRYPOINTS_ENV]))
    else:

        @pgq.entrypoint("noop")
        async def noop(job: Job) -> None:
            pass

        @pgq.entrypoint("stamp")
        async def stamp_start(job: Job) -> None:
            stamp((job.payload or b"").decode())

    try:
        yield pgq
    finally:
        await conn.close()


async def noop(job: Job) -> None:
    pass


async def limited(job: Job) -> None:
    await limited_run(job.entrypoint, job.updated.timestamp())


def register_mix(pgq: PgQueuer, mix: tuple[Entrypoint, ...]) -> None:
    """A mix's entrypoints (benchmarks/runners/mix.py). PgQueuer 1.6 limits concurrency across its workers
    (``concurrency_limit``) but has no rate limit: compare.py queues no jobs for a rate-limited entrypoint here."""
    for e in mix:
        pgq.entrypoint(e.name, concurrency_limit=e.concurrency_limit)(limited if e.runs_slow else noop)


def consume(batch: int, concurrency: int) -> None:
    setup_fancy_logger(LogLevel.INFO)
    uvloop.run(pgqueuer.run(create_pgqueuer, batch_size=batch, max_concurrent_tasks=concurrency))


if __name__ == "__main__":
    if sys.argv[1] == "consume":
        consume(int(sys.argv[2]), int(sys.argv[3]))
    else:
        run(producer)
