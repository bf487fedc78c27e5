"""Producer behaviour on PostgreSQL itself: transactions, round trips, notifications and concurrent producers.

What every backend does with an enqueue (dedupe modes, deletion) is in tests/test_port_producers.py."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from pgqd import Client, DedupeConflict, JobSpec, PgqdError, PostgresBackend
from pgqd.identifiers import Names


class CountingConnection:
    """Counts the statements sent through an asyncpg connection."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._conn, name)
        if name in ("fetch", "fetchrow", "fetchval", "execute", "executemany"):
            self.calls += 1
        return attribute


async def test_enqueue_joins_the_callers_transaction(conn: Any) -> None:
    client = Client(conn)
    async with conn.transaction():
        await client.enqueue("mail", {"to": "a@example.com"})
        assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs") == 1
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs") == 1

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback):
        async with conn.transaction():
            await client.enqueue_many([JobSpec("mail") for _ in range(5)])
            await client.enqueue_many([JobSpec("mail") for _ in range(50)])  # alike jobs: a statement of their own
            raise Rollback
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs") == 1


@pytest.mark.parametrize("kind", ["mixed", "uniform", "uniform-without-payloads"])
async def test_ten_thousand_jobs_go_in_one_statement_with_ids_in_input_order(conn: Any, kind: str) -> None:
    counting = CountingConnection(conn)
    client = Client(PostgresBackend(counting))

    def spec(n: int) -> JobSpec:
        if kind == "mixed":
            return JobSpec(f"bulk{n % 3}", {"n": n}, priority=n % 7)
        return JobSpec("bulk", {"n": n} if kind == "uniform" else None, priority=4)

    ids = await client.enqueue_many([spec(n) for n in range(10_000)])
    assert counting.calls == 1
    assert len(ids) == 10_000
    assert len(set(ids)) == 10_000
    picked = [0, 1, 5000, 9998, 9999]
    rows = await conn.fetch(
        "SELECT id, entrypoint, priority, payload FROM pgqd_jobs WHERE id = ANY($1::bigint[])", [ids[n] for n in picked]
    )
    stored = {row["id"]: (row["entrypoint"], row["priority"], row["payload"]) for row in rows}
    for n in picked:
        expected = spec(n)
        payload = None if expected.payload is None else json.dumps(expected.payload, separators=(",", ":")).encode()
        assert stored[ids[n]] == (expected.entrypoint, expected.priority, payload)
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs WHERE status = 'queued'") == 10_000


def test_job_spec_takes_its_fields_in_order_with_their_defaults() -> None:
    parameters = list(inspect.signature(JobSpec).parameters.values())
    fields = dataclasses.fields(JobSpec)
    assert [p.name for p in parameters] == [f.name for f in fields]
    assert [p.default for p in parameters][1:] == [f.default for f in fields][1:]
    assert parameters[0].default is inspect.Parameter.empty
    assert fields[0].default is dataclasses.MISSING
    spec = JobSpec("a", b"x", priority=3)
    assert spec == JobSpec("a", b"x", 3)
    assert hash(spec) == hash(JobSpec("a", b"x", 3))
    assert dataclasses.replace(spec, priority=5).priority == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.priority = 4  # type: ignore[misc]


async def test_one_notification_per_enqueue_statement(conn: Any, db_dsn: str) -> None:
    listener = await asyncpg.connect(db_dsn)
    received: list[str] = []
    await listener.add_listener(Names().channel, lambda *args: received.append(args[3]))
    try:
        await Client(conn).enqueue_many([JobSpec("a") for _ in range(500)] + [JobSpec("b") for _ in range(500)])
        await Client(conn).enqueue("c", execute_after=timedelta(seconds=30))
        await Client(conn).enqueue_many([JobSpec("d") for _ in range(100)])  # alike jobs: a statement of their own
        for _ in range(50):
            if len(received) >= 3:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
    finally:
        await listener.close()
    assert len(received) == 3
    first, second, third = (json.loads(text) for text in received)
    assert first == {"t": "enqueued", "e": ["a", "b"], "p": 0}
    assert second["e"] == ["c"]
    assert second["d"] == pytest.approx(30)
    assert third == {"t": "enqueued", "e": ["d"], "p": 0}


async def test_payloads_are_stored_by_type(conn: Any) -> None:
    client = Client(conn)
    ids = await client.enqueue_many(
        [
            JobSpec("p", b"\x00\xffraw"),
            JobSpec("p", "tekst æøå"),
            JobSpec("p", {"a": [1, 2]}),
            JobSpec("p", [1, "two"]),
            JobSpec("p", None),
            JobSpec("p", 42),
        ]
    )
    stored = {row["id"]: row["payload"] for row in await conn.fetch("SELECT id, payload FROM pgqd_jobs")}
    assert [stored[i] for i in ids] == [
        b"\x00\xffraw",
        "tekst æøå".encode(),
        b'{"a":[1,2]}',
        b'[1,"two"]',
        None,
        b"42",
    ]
    with pytest.raises(PgqdError, match="cannot be stored"):
        await client.enqueue("p", object())


async def test_headers_priority_and_deferral_are_stored(conn: Any) -> None:
    client = Client(conn)
    at = datetime.now(UTC) + timedelta(hours=2)
    first = await client.enqueue("h", headers={"traceparent": "00-abc-def-01"}, priority=9)
    later = await client.enqueue("h", execute_after=timedelta(minutes=10))
    exact = await client.enqueue("h", execute_after=at)
    rows = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT id, status::text, priority, headers::text, execute_after - created_at AS wait, execute_after"
            " FROM pgqd_jobs"
        )
    }
    assert json.loads(rows[first]["headers"]) == {"traceparent": "00-abc-def-01"}
    assert rows[first]["priority"] == 9
    assert rows[first]["status"] == "queued"
    assert rows[later]["status"] == "deferred"
    assert timedelta(minutes=9, seconds=59) < rows[later]["wait"] < timedelta(minutes=10, seconds=1)
    assert rows[exact]["execute_after"] == at


async def test_a_naive_datetime_is_refused(conn: Any) -> None:
    with pytest.raises(PgqdError, match="naive datetime"):
        await Client(conn).enqueue("x", execute_after=datetime.now())
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs") == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"entrypoint": ""}, "non-empty str"),
        ({"entrypoint": "x", "priority": "high"}, "priority must be an int"),
        ({"entrypoint": "x", "priority": 2**40}, "priority must be an int"),
        ({"entrypoint": "x", "dedupe_key": 7}, "dedupe_key must be a str"),
        ({"entrypoint": "x", "execute_after": 30}, "timedelta or an aware datetime"),
        ({"entrypoint": "x", "colour": "red"}, "unknown job field"),
        ({"entrypoint": "x", "headers": {"a": object()}}, "JSON-serialisable"),
    ],
)
async def test_invalid_job_requests_are_refused_before_any_write(conn: Any, spec: dict[str, Any], message: str) -> None:
    with pytest.raises(PgqdError, match=message):
        await Client(conn).enqueue_many([{"entrypoint": "ok"}, spec])
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs") == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (JobSpec(""), "non-empty str"),
        (JobSpec(7), "non-empty str"),  # type: ignore[arg-type]
        (JobSpec("x", priority=True), "priority must be an int"),
        (JobSpec("x", priority=-(2**40)), "priority must be an int"),
        (JobSpec("x", object()), "cannot be stored"),
        (JobSpec("x", execute_after=0), "timedelta or an aware datetime"),  # type: ignore[arg-type]
        (JobSpec("x", headers={"a": object()}), "JSON-serialisable"),
    ],
)
async def test_a_bad_job_among_plain_ones_is_refused_before_any_write(conn: Any, spec: JobSpec, message: str) -> None:
    """Batches of jobs with nothing but an entrypoint, a payload and a priority are checked column by column;
    a bad job anywhere in one is still named."""
    plain = [JobSpec("ok", {"n": n}, priority=n % 3) for n in range(60)]
    with pytest.raises(PgqdError, match=message):
        await Client(conn).enqueue_many([*plain[:30], spec, *plain[30:]])
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs") == 0


async def test_concurrent_enqueues_of_one_dedupe_key_store_one_job(db_dsn: str) -> None:
    first = await asyncpg.connect(db_dsn)
    second = await asyncpg.connect(db_dsn)
    try:
        transaction = first.transaction()
        await transaction.start()
        await Client(first).enqueue("d", dedupe_key="race")
        # The second producer must wait for the first transaction to decide, then see the key taken.
        blocked = asyncio.create_task(Client(second).enqueue("d", dedupe_key="race"))
        await asyncio.sleep(0.3)
        assert not blocked.done()
        await transaction.commit()
        with pytest.raises(DedupeConflict):
            await asyncio.wait_for(blocked, 10)
        skipped = await Client(second).enqueue("d", dedupe_key="race", on_conflict="skip")
        assert skipped is None
        assert await first.fetchval("SELECT count(*) FROM pgqd_jobs WHERE dedupe_key = 'race'") == 1
    finally:
        await first.close()
        await second.close()


async def test_a_rolled_back_key_holder_lets_the_waiting_producer_in(db_dsn: str) -> None:
    first = await asyncpg.connect(db_dsn)
    second = await asyncpg.connect(db_dsn)
    try:
        transaction = first.transaction()
        await transaction.start()
        await Client(first).enqueue("d", dedupe_key="maybe")
        waiting = asyncio.create_task(Client(second).enqueue("d", dedupe_key="maybe"))
        await asyncio.sleep(0.3)
        await transaction.rollback()
        job_id = await asyncio.wait_for(waiting, 10)
        assert isinstance(job_id, int)
    finally:
        await first.close()
        await second.close()


async def test_enqueue_through_a_pool(db_dsn: str) -> None:
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    try:
        async with Client(pool) as client:
            ids = await client.enqueue_many([JobSpec("pooled") for _ in range(3)])
            states = await client.status(ids)
        assert {s.status for s in states.values()} == {"queued"}
    finally:
        await pool.close()


async def test_custom_schema_and_prefix(empty_dsn: str) -> None:
    conn = await asyncpg.connect(empty_dsn)
    try:
        from pgqd import install

        await install(conn, schema="jobs_here", prefix="app_")
        client = Client(conn, schema="jobs_here", prefix="app_")
        job_id = await client.enqueue("x", "y")
        assert await conn.fetchval("SELECT payload FROM jobs_here.app_jobs WHERE id = $1", job_id) == b"y"
    finally:
        await conn.close()
