"""pgqd's side of compare.py: the producer through the public ``Client`` on one asyncpg connection."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from benchmarks.runners.protocol import BATCH_PAYLOAD, run
from pgqd import Client, JobSpec


class PgqdProducer:
    def __init__(self, client: Client) -> None:
        self.client = client

    async def batch(self, count: int, entrypoint: str = "noop") -> None:
        await self.client.enqueue_many([JobSpec(entrypoint, BATCH_PAYLOAD) for _ in range(count)])

    async def one(self, entrypoint: str, sequence: int) -> None:
        await self.client.enqueue(entrypoint, str(sequence).encode())


@contextlib.asynccontextmanager
async def producer(dsn: str) -> AsyncIterator[PgqdProducer]:
    conn = await asyncpg.connect(dsn)
    try:
        yield PgqdProducer(Client(conn))
    finally:
        await conn.close()


if __name__ == "__main__":
    run(producer)
