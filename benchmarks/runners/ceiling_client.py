"""The plain-SQL ceiling: one client process claiming and completing rows of a bare queue table in a loop.

    python -m benchmarks.runners.ceiling_client '{"dsn": ..., "batch": 10, "in_flight": 32, "start_at": <epoch s>}'

A claim of up to ``batch`` rows (``FOR UPDATE SKIP LOCKED``, oldest first) and a delete of claimed rows, each
in its own autocommit transaction. The claim commits without waiting for the disk, as pgqd's claim does
(docs/reliability.md); the delete waits for it, as every recorded outcome must. Claims and deletes run on two
connections, so that claiming goes on while a delete waits for the disk, and each delete takes every batch
claimed by then (as pgqd's outcome flush does), with at most ``in_flight`` jobs claimed and not yet deleted
(about pgqd's concurrency). That is all a queue with pgqd's durability must do, and so what the database on this
machine can give one.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import asyncpg

from benchmarks.runners.protocol import BATCH_PAYLOAD

TABLE = """
CREATE TABLE ceiling_jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status text NOT NULL DEFAULT 'queued',
    payload bytea
);
CREATE INDEX ceiling_jobs_queued ON ceiling_jobs (id) WHERE status = 'queued';
"""
FILL = "INSERT INTO ceiling_jobs (payload) SELECT $2::bytea FROM generate_series(1, $1)"

CLAIM = """
UPDATE ceiling_jobs SET status = 'picked'
FROM set_config('synchronous_commit', 'off', true) AS no_flush
WHERE id IN (SELECT id FROM ceiling_jobs WHERE status = 'queued' ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id
"""
COMPLETE = "DELETE FROM ceiling_jobs WHERE id = ANY($1::bigint[])"
END = -1  # after the last claimed batch


async def create(dsn: str, jobs: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(TABLE)
        await conn.execute(FILL, jobs, BATCH_PAYLOAD)
    finally:
        await conn.close()


async def drain(dsn: str, batch: int, in_flight: int, start_at: float) -> dict[str, float]:
    claimer, completer = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    claimed: asyncio.Queue[list[int]] = asyncio.Queue(maxsize=max(1, in_flight // batch - 1))
    try:
        await claimer.fetch(CLAIM, 0)  # prepares the statements before the clock starts
        await completer.execute(COMPLETE, [])
        await asyncio.sleep(max(0.0, start_at - time.time()))
        first = time.time()

        async def claim() -> None:
            while ids := [row[0] for row in await claimer.fetch(CLAIM, batch)]:
                await claimed.put(ids)
            await claimed.put([END])

        async def complete() -> tuple[int, float]:
            done, last = 0, first
            finished = False
            while not finished:
                ids = await claimed.get()
                while not claimed.empty():
                    ids += await claimed.get()
                finished = not ids or ids[-1] == END
                ids = [i for i in ids if i != END]
                if ids:
                    await completer.execute(COMPLETE, ids)
                    done, last = done + len(ids), time.time()
            return done, last

        _, (done, last) = await asyncio.gather(claim(), complete())
        return {"first_start": first, "last_finish": last, "jobs": done}
    finally:
        await claimer.close()
        await completer.close()


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    result = drain(request["dsn"], request["batch"], request["in_flight"], request["start_at"])
    print(json.dumps(asyncio.run(result)))
