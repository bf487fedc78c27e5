"""Operator tools against a real database: `pgqd jobs`, `pgqd grants` applied to real roles, tracing."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from pgqd import Client, Entrypoint, JobSpec, PostgresBackend, RetryPolicy, Worker, WorkerSettings, Workflow
from pgqd.identifiers import Names
from pgqd.sql.grants import grant_statements
from tests.support.cli import run_pgqd


async def fail(_job: Any) -> None:
    raise ValueError("boom")


async def noop(_job: Any) -> None:
    return None


async def test_jobs_list_failed_requeue_and_cancel(conn: Any, db_dsn: str) -> None:
    client = Client(conn)
    held = await client.enqueue_many([JobSpec("flaky", {"n": n}) for n in range(3)])
    waiting = await client.enqueue_many([JobSpec("later", priority=5) for _ in range(2)])
    backend = await PostgresBackend.open(db_dsn)
    try:
        entry = Entrypoint("flaky", fail, on_failure="hold", retry=RetryPolicy(max_attempts=1))
        await Worker(backend, [entry], WorkerSettings(poll_interval=0.2)).run(drain=True)
    finally:
        await backend.close()

    listed = run_pgqd("jobs", "list", "--dsn", db_dsn, "--entrypoint", "later")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert rows[0].split()[:3] == ["id", "entrypoint", "status"]
    assert [line.split()[0] for line in rows[1:]] == [str(i) for i in waiting]

    failed = run_pgqd("jobs", "failed", "--dsn", db_dsn)
    assert failed.returncode == 0, failed.stderr
    assert "ValueError" in failed.stdout
    assert "boom" in failed.stdout
    assert len(failed.stdout.splitlines()) == 1 + len(held)

    one = run_pgqd("jobs", "requeue", "--dsn", db_dsn, str(held[0]), str(waiting[0]))
    assert one.returncode == 0, one.stderr
    assert f"requeued 1 job(s): {held[0]}" in one.stdout
    assert f"not held, so not requeued: {waiting[0]}" in one.stderr
    rest = run_pgqd("jobs", "requeue", "--dsn", db_dsn, "--all-failed")
    assert "requeued 2 job(s)" in rest.stdout
    states = await client.status(held)
    assert {s.status for s in states.values()} == {"queued"}
    assert {s.attempts for s in states.values()} == {0}

    canceled = run_pgqd("jobs", "cancel", "--dsn", db_dsn, *map(str, waiting), "999999")
    assert "canceled 2 waiting job(s)" in canceled.stdout
    assert "not live (finished or unknown): 999999" in canceled.stderr
    finished = run_pgqd("jobs", "list", "--dsn", db_dsn, "--status", "canceled", "--json")
    assert sorted(row["id"] for row in json.loads(finished.stdout)) == sorted(waiting)

    usage = run_pgqd("jobs", "requeue", "--dsn", db_dsn)
    assert usage.returncode == 2
    assert "give job ids or --all-failed" in usage.stderr


async def test_jobs_list_shows_suspects(conn: Any, db_dsn: str) -> None:
    ids = await Client(conn).enqueue_many([JobSpec("fragile") for _ in range(2)])
    await conn.execute("UPDATE pgqd_jobs SET status = 'suspect', deaths = 2 WHERE id = $1", ids[0])

    listed = run_pgqd("jobs", "list", "--dsn", db_dsn, "--status", "suspect", "--json")

    assert listed.returncode == 0, listed.stderr
    assert [(row["id"], row["status"]) for row in json.loads(listed.stdout)] == [(ids[0], "suspect")]


def as_role(dsn: str, role: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{role}@{host}", parts.path, parts.query, parts.fragment))


@pytest.fixture
async def roles(pg_server: str) -> AsyncIterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    producer, worker = f"pgqd_producer_{suffix}", f"pgqd_worker_{suffix}"
    admin = await asyncpg.connect(pg_server)
    try:
        for role in (producer, worker):
            await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        yield producer, worker
    finally:
        # The test revokes what the roles were granted in its own database, so they can go now.
        for role in (producer, worker):
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_grants_let_a_producer_enqueue_but_not_claim_and_a_worker_run_jobs(
    conn: Any, db_dsn: str, roles: tuple[str, str]
) -> None:
    producer, worker = roles
    printed = run_pgqd("grants", "--producer-role", producer, "--worker-role", worker)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines()[1:] == grant_statements(Names(), producer, worker)[1:]
    await conn.execute(printed.stdout)
    try:
        as_producer = await asyncpg.connect(as_role(db_dsn, producer))
        try:
            client = Client(as_producer)
            ids = await client.enqueue_many([JobSpec("work", {"n": n}) for n in range(5)])
            await client.enqueue("work", dedupe_key="k", on_conflict="raise_priority")
            assert {s.status for s in (await client.status(ids)).values()} == {"queued"}
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await as_producer.fetch(
                    "SELECT * FROM pgqd_claim_jobs(1, 10, ARRAY['work'], ARRAY[0],"
                    " ARRAY[0]::float8[], ARRAY[0]::float8[])"
                )
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await as_producer.execute("UPDATE pgqd_jobs SET status = 'picked'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await as_producer.execute("DELETE FROM pgqd_workers")
            canceled = await client.cancel(ids[-1])
            assert canceled.canceled == [ids[-1]]
            # Workflows: a chain, and cancelling a parent, which settles its children by their policies.
            chain = Workflow("granted")
            chain.chain("work", "work")
            run = await client.enqueue_workflow(chain)
            runs_anyway = await client.enqueue("work", after=[run.ids[0]], on_parent_failure="run")
            assert runs_anyway is not None
            await client.cancel(run.ids[0])
            states = await client.status([*run.ids, runs_anyway])
            assert [states[i].status for i in (*run.ids, runs_anyway)] == ["canceled", "canceled", "queued"]
            with pytest.raises(asyncpg.RaiseError):
                await as_producer.fetch(
                    "SELECT pgqd_settle_children(ARRAY[$1::bigint], ARRAY['successful'], NULL, NULL, 'x')", ids[0]
                )
        finally:
            await as_producer.close()
        backend = await PostgresBackend.open(as_role(db_dsn, worker))
        try:
            await Worker(backend, [Entrypoint("work", noop)], WorkerSettings(poll_interval=0.2)).run(drain=True)
        finally:
            await backend.close()
        assert await conn.fetchval("SELECT count(*) FROM pgqd_log WHERE status = 'successful'") == 5 + 1
    finally:
        await conn.execute(f'DROP OWNED BY "{producer}", "{worker}"')


def test_grants_refuse_a_role_name_that_is_not_an_identifier() -> None:
    result = run_pgqd("grants", "--producer-role", 'app"; drop table x; --')
    assert result.returncode == 2
    assert "not a plain identifier" in result.stderr


async def test_tracing_links_the_consumer_span_to_the_producer_span() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from pgqd import MemoryBackend, tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracing.refresh()  # an earlier test in this process may have looked before there was a provider
    tracer = trace.get_tracer("tests")
    backend = MemoryBackend()
    client = Client(backend)
    with tracer.start_as_current_span("signup") as producer_span:
        job_id = await client.enqueue("welcome", {"to": "ada@example.com"})
    assert job_id is not None
    assert "traceparent" in (backend.jobs[job_id].headers or "")
    await Worker(backend, [Entrypoint("welcome", noop)], WorkerSettings(poll_interval=0.2)).run(drain=True)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    consumer = spans["welcome process"]
    assert consumer.kind == trace.SpanKind.CONSUMER
    assert [link.context.span_id for link in consumer.links] == [producer_span.get_span_context().span_id]
    assert consumer.attributes is not None
    assert consumer.attributes["messaging.message.id"] == str(job_id)
    assert consumer.attributes["pgqd.outcome"] == "successful"
