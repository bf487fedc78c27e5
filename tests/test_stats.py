"""The read side shared by the terminal dashboard, the web UI, the MCP tools and the queue gauges, against a real
database holding jobs in every state."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from pgqd import Client, JobSpec, PostgresBackend
from pgqd.identifiers import Names
from pgqd.models import EntrypointLimit, ErrorInfo, Finished, Unfinished, WorkerInfo
from pgqd.ops.stats import QueueStats


async def fill(db_dsn: str) -> dict[str, Any]:
    """mail: 3 queued, 1 deferred, 1 running, 1 held; report: 2 finished (one failed), 1 queued."""
    backend = await PostgresBackend.open(db_dsn)
    try:
        client = Client(backend)
        mail = await client.enqueue_many([JobSpec("mail", {"n": n}) for n in range(5)])
        later = await client.enqueue("mail", "later", execute_after=timedelta(hours=1))
        report = await client.enqueue_many([JobSpec("report", "r", headers={"k": "v"}) for _ in range(3)])
        worker = await backend.register_worker(WorkerInfo("host-a", 4242, ["mail", "report"]))
        claimed = await backend.claim(worker, 2, [EntrypointLimit("mail")])
        held, running = (j.id for j in claimed.jobs)
        await backend.record(worker, [Unfinished(held, "hold", error=ErrorInfo("IOError", "smtp down", "tb"))], [])
        done = await backend.claim(worker, 2, [EntrypointLimit("report")])
        ok, bad = (j.id for j in done.jobs)
        await backend.record(
            worker,
            [
                Finished(ok, "successful", duration=0.01, result_json='{"pages": 3}'),
                Finished(bad, "exception", duration=0.02, error=ErrorInfo("KeyError", "'x'", "Traceback ...")),
            ],
            [],
        )
        return {
            "mail": mail, "later": later, "report": report, "worker": worker,
            "held": held, "running": running, "ok": ok, "bad": bad,
        }  # fmt: skip
    finally:
        await backend.close()


@pytest.fixture
async def stats(db_dsn: str) -> Any:
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    try:
        yield QueueStats(pool, Names())
    finally:
        await pool.close()


async def test_queues_count_every_live_state_per_entrypoint_with_ages(db_dsn: str, stats: QueueStats) -> None:
    ids = await fill(db_dsn)
    conn = await asyncpg.connect(db_dsn)
    try:  # two jobs waiting for the running one, one of an entrypoint with nothing else
        await Client(conn).enqueue_many(
            [JobSpec("report", after=[ids["running"]]), JobSpec("digest", after=[ids["running"]])]
        )
    finally:
        await conn.close()
    queues = {q.entrypoint: q for q in await stats.queues()}
    assert set(queues) == {"mail", "report", "digest"}
    mail, report = queues["mail"], queues["report"]
    assert (mail.queued, mail.deferred, mail.running, mail.held, mail.waiting) == (3, 1, 1, 1, 0)
    assert (report.queued, report.deferred, report.running, report.held, report.waiting) == (1, 0, 0, 0, 1)
    assert (queues["digest"].queued, queues["digest"].waiting, queues["digest"].oldest_eligible_age) == (0, 1, None)
    assert mail.oldest_queued_age is not None
    assert 0 <= mail.oldest_queued_age < 60
    assert mail.oldest_due_age is None  # the deferred job is not due for an hour
    assert mail.oldest_eligible_age == mail.oldest_queued_age
    assert not mail.paused

    capped = {q.entrypoint: q for q in await stats.queues(count_limit=2)}
    assert capped["mail"].queued == 2

    depth = {(d.entrypoint, d.status): d.jobs for d in await stats.depth()}
    assert depth == {("mail", "queued"): 3, ("mail", "deferred"): 1, ("mail", "picked"): 1, ("mail", "failed"): 1,
                     ("report", "queued"): 1, ("report", "waiting"): 1, ("digest", "waiting"): 1}  # fmt: skip


async def test_an_entrypoint_served_by_a_worker_shows_with_no_jobs(db_dsn: str, stats: QueueStats) -> None:
    backend = await PostgresBackend.open(db_dsn)
    try:
        await backend.register_worker(WorkerInfo("h", 1, ["idle"]))
    finally:
        await backend.close()
    [idle] = await stats.queues()
    assert (idle.entrypoint, idle.queued, idle.running, idle.oldest_eligible_age) == ("idle", 0, 0, None)


async def test_throughput_failures_and_held_jobs(db_dsn: str, stats: QueueStats) -> None:
    ids = await fill(db_dsn)
    series = await stats.throughput_series(window=3600, bucket=60)
    assert sum(b.succeeded for b in series) == 1
    assert sum(b.failed for b in series) == 1
    assert {b.entrypoint for b in series} == {"report"}
    assert await stats.throughput_series(window=3600, entrypoint="mail") == []
    assert {(t.entrypoint, t.status, t.last_5m) for t in await stats.throughput()} == {
        ("report", "successful", 1),
        ("report", "exception", 1),
    }

    [failed] = await stats.recent_failures(window=600)
    assert (failed.id, failed.status, failed.error_type, failed.error_message) == (ids["bad"], "exception",
                                                                                  "KeyError", "'x'")  # fmt: skip
    [held] = await stats.held_jobs()
    assert (held.id, held.entrypoint, held.error_type, held.error_message) == (ids["held"], "mail", "IOError",
                                                                               "smtp down")  # fmt: skip
    assert await stats.held_jobs(after_id=held.id) == []
    assert await stats.held_jobs("report") == []
    assert await stats.held_ids("mail") == [ids["held"]]


async def test_job_detail_of_live_and_finished_jobs(db_dsn: str, stats: QueueStats) -> None:
    ids = await fill(db_dsn)
    queued = await stats.job(ids["report"][2])
    assert queued is not None
    assert not queued.finished
    assert (queued.status, queued.payload, queued.headers) == ("queued", b"r", {"k": "v"})
    held = await stats.job(ids["held"])
    assert held is not None
    assert (held.status, held.error_type, held.error_traceback, held.attempts) == ("failed", "IOError", "tb", 1)
    finished = await stats.job(ids["ok"])
    assert finished is not None
    assert finished.finished
    assert (finished.status, finished.result, finished.worker_id) == ("successful", {"pages": 3}, ids["worker"])
    failed = await stats.job(ids["bad"])
    assert failed is not None
    assert failed.error_traceback == "Traceback ..."
    assert await stats.job(10**12) is None


async def test_workers_schedules_and_pauses(db_dsn: str, stats: QueueStats) -> None:
    ids = await fill(db_dsn)
    [worker] = await stats.workers()
    assert (worker.id, worker.host, worker.pid, worker.running) == (ids["worker"], "host-a", 4242, 1)
    assert worker.entrypoints == ["mail", "report"]
    assert await stats.schedules() == []
    pauses = await stats.pauses()
    assert not pauses.all_paused
    assert not pauses.paused


async def test_queries_work_inside_a_callers_transaction(db_dsn: str) -> None:
    conn = await asyncpg.connect(db_dsn)
    try:
        async with conn.transaction():
            await Client(conn).enqueue("tx", None)
            [row] = await QueueStats(conn, Names()).queues()
            assert (row.entrypoint, row.queued) == ("tx", 1)
    finally:
        await conn.close()
