"""The plain-SQL ceiling: one client process claiming and completing rows of a bare queue table in a loop.

    python -m benchmarks.runners.ceiling_client '{"dsn": ..., "batch": 10, "start_at": <epoch seconds>}'

Each round is two autocommit statements at the server's default durability: a claim of up to ``batch`` rows
(``FOR UPDATE SKIP LOCKED``, oldest first) and a delete of the claimed rows. It does what every queue must
do per batch and nothing more, so it is what the database on this machine can give a queue.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import asyncpg

TABLE = """
CREATE TABLE ceiling_jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status text NOT NULL DEFAULT 'queued',
    payload bytea
);
CREATE INDEX ceiling_jobs_queued ON ceiling_jobs (id) WHERE status = 'queued';
"""
FILL = "INSERT INTO ceiling_jobs (payload) SELECT NULL FROM generate_series(1, $1)"

CLAIM = """
UPDATE ceiling_jobs SET status = 'picked'
WHERE id IN (SELECT id FROM ceiling_jobs WHERE status = 'queued' ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id
"""
COMPLETE = "DELETE FROM ceiling_jobs WHERE id = ANY($1::bigint[])"


async def create(dsn: str, jobs: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(TABLE)
        await conn.execute(FILL, jobs)
    finally:
        await conn.close()


async def drain(dsn: str, batch: int, start_at: float) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.fetch(CLAIM, 0)  # prepares the statement before the clock starts
        await asyncio.sleep(max(0.0, start_at - time.time()))
        first = time.time()
        last = first
        done = 0
        while ids := [row[0] for row in await conn.fetch(CLAIM, batch)]:
            await conn.execute(COMPLETE, ids)
            done += len(ids)
            last = time.time()
        return {"first_start": first, "last_finish": last, "jobs": done}
    finally:
        await conn.close()


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(drain(request["dsn"], request["batch"], request["start_at"]))))
