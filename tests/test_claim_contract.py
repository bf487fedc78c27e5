"""The claim's contract and its limits, on PostgreSQL: the rows it returns are named as the worker reads them, and
a limited entrypoint's limit state is touched only when that entrypoint has work the claim wants, never making
a claim of other entrypoints wait."""

from __future__ import annotations

import asyncio
from dataclasses import fields
from typing import Any

import asyncpg

from pgqd import Client, JobSpec, PostgresBackend
from pgqd.backend.postgres import CLAIM_HINT, CLAIM_WAKE_IN, CLAIMED_JOB_COLUMNS
from pgqd.identifiers import Names
from pgqd.models import ClaimedJob, EntrypointLimit, WorkerInfo
from pgqd.sql.statements import statements_for

FREE = EntrypointLimit("free")
CAPPED = EntrypointLimit("capped", concurrency=2)
RATED = EntrypointLimit("rated", rate_per_second=5.0, burst=5.0)
# A claim that waited on a lock would run into this instead of coming back.
NO_WAITING = "SET lock_timeout = '2s'"


async def test_the_claims_columns_are_named_as_the_fields_of_a_claimed_job_then_the_hint(conn: Any) -> None:
    await Client(conn).enqueue("free", b"x")
    worker = await PostgresBackend(conn).register_worker(WorkerInfo("host", 1, ("free",)))
    statement = statements_for(Names()).claim_jobs
    rows = await conn.fetch(statement, worker, 10, ["free"], [0], [0.0], [0.0], False, None, None, True, None, None)

    names = list(rows[0].keys())
    assert names[:CLAIMED_JOB_COLUMNS] == [f.name for f in fields(ClaimedJob)]
    assert (names[CLAIM_WAKE_IN], names[CLAIM_HINT]) == ("wake_in", "hint")
    job = ClaimedJob(*rows[0][:CLAIMED_JOB_COLUMNS])
    assert (job.entrypoint, job.payload, job.attempts) == ("free", b"x", 1)


async def test_the_rows_of_a_write_that_hands_slots_over_name_the_successors_fields(conn: Any, db_dsn: str) -> None:
    first, second = await Client(conn).enqueue_many([JobSpec("capped", b"1"), JobSpec("capped", b"2")])
    backend = PostgresBackend(conn)
    worker = await backend.register_worker(WorkerInfo("host", 1, ("capped",)))
    await backend.claim(worker, 1, [CAPPED])
    # Another claimer holds the limit row: the hand-over needs no lock on it, so it does not wait.
    holder = await hold_limit_rows(db_dsn, ["capped"])
    try:
        await conn.execute(NO_WAITING)
        statement = statements_for(Names()).record_outcomes_handing_over
        none: list[Any] = []
        rows = await conn.fetch(
            statement, worker, [first], ["successful"], [0.0], [0.0], [None], [None], [None], [None], none, none,
            none, none, "pgqd_events", ["capped"], none, [None], ["capped"], [1], [2],
        )  # fmt: skip
    finally:
        await holder.close()
    [row] = rows
    assert list(row.keys())[2:] == [f.name for f in fields(ClaimedJob)]
    job = ClaimedJob(*row[2:])
    assert (row["applied"], job.id, job.payload, job.attempts) == (1, second, b"2", 1)


async def hold_limit_rows(db_dsn: str, entrypoints: list[str]) -> asyncpg.Connection:
    """Another claimer in the middle of its claim: it holds these limit rows until it is closed."""
    holder = await asyncpg.connect(db_dsn)
    await holder.execute(
        "INSERT INTO pgqd_entrypoint_limits (entrypoint, tokens, refilled_at)"
        " SELECT e, 5, now() FROM unnest($1::text[]) AS e ON CONFLICT DO NOTHING",
        entrypoints,
    )
    await holder.execute("BEGIN")
    await holder.execute(
        "SELECT 1 FROM pgqd_entrypoint_limits WHERE entrypoint = ANY($1::text[]) FOR UPDATE", entrypoints
    )
    return holder


async def test_a_limited_entrypoint_with_nothing_queued_is_not_read_by_the_claim(conn: Any, db_dsn: str) -> None:
    ids = await Client(conn).enqueue_many([JobSpec("free") for _ in range(3)])
    holder = await hold_limit_rows(db_dsn, ["capped", "rated"])
    try:
        await conn.execute(NO_WAITING)
        backend = PostgresBackend(conn)
        worker = await backend.register_worker(WorkerInfo("host", 1, ("free", "capped", "rated")))

        result = await backend.claim(worker, 10, [FREE, CAPPED, RATED])

        assert sorted(job.id for job in result.jobs) == sorted(ids)
        assert result.throttled_in is None  # nothing of theirs waits: nothing to come back for
    finally:
        await holder.close()


async def test_a_limited_entrypoint_held_by_another_claim_is_left_for_later_and_the_rest_is_claimed(
    conn: Any, db_dsn: str
) -> None:
    client = Client(conn)
    free = await client.enqueue_many([JobSpec("free") for _ in range(3)])
    capped = await client.enqueue_many([JobSpec("capped") for _ in range(3)])
    holder = await hold_limit_rows(db_dsn, ["capped"])
    backend = PostgresBackend(conn)
    worker = await backend.register_worker(WorkerInfo("host", 1, ("free", "capped")))
    try:
        await conn.execute(NO_WAITING)

        result = await backend.claim(worker, 10, [FREE, CAPPED])

        assert sorted(job.id for job in result.jobs) == sorted(free)
        assert result.throttled_in is not None
        assert result.throttled_in < 0.1  # come back in a moment
    finally:
        await holder.close()
    # Free again: its limit applies as ever.
    again = await backend.claim(worker, 10, [FREE, CAPPED])
    assert sorted(job.id for job in again.jobs) == sorted(capped)[:2]


async def test_claims_of_a_contended_limited_entrypoint_stay_exact(db_dsn: str, conn: Any) -> None:
    await Client(conn).enqueue_many([JobSpec("capped") for _ in range(40)])
    backends = [await PostgresBackend.open(db_dsn, pool_size=1) for _ in range(6)]
    try:
        workers = [await b.register_worker(WorkerInfo("host", n, ("capped",))) for n, b in enumerate(backends)]
        results = await asyncio.gather(*(b.claim(w, 10, [CAPPED]) for b, w in zip(backends, workers, strict=True)))
        assert sum(len(r.jobs) for r in results) == 2
        running = await conn.fetchval("SELECT count(*) FROM pgqd_jobs WHERE status = 'picked'")
        assert running == 2
    finally:
        for backend in backends:
            await backend.close()
