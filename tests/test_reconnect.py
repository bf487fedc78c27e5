"""A worker survives losing its connections, and a worker presumed dead cannot overwrite the run that replaced it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from pgqd import Client, Entrypoint, Job, JobSpec, PostgresBackend, Worker, WorkerSettings
from tests.support.processes import describe, engine_subprocesses
from tests.support.waiting import wait_until

JOBS = 200

# Only this test database's pgqd connections: other databases on the server are none of this test's business.
KILL_PGQD_CONNECTIONS = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE application_name = 'pgqd' AND datname = current_database() AND pid <> pg_backend_pid()
"""


def logged_at_least(conn: Any, count: int) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def check() -> bool:
        return bool(await conn.fetchval("SELECT count(*) >= $1 FROM pgqd_log", count))

    return check


def pgqd_connections(conn: Any, at_least: int) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def check() -> bool:
        return bool(
            await conn.fetchval(
                "SELECT count(*) >= $1 FROM pg_stat_activity "
                "WHERE application_name = 'pgqd' AND datname = current_database()",
                at_least,
            )
        )

    return check


@pytest.mark.slow
async def test_worker_survives_killed_connections_and_loses_no_job(db_dsn: str, conn: Any, tmp_path: Path) -> None:
    spec = {
        "entrypoints": [{"name": "nap", "handler": "nap"}],
        # A long poll: only a working LISTEN connection can make the last job start promptly.
        "settings": {"concurrency": 5, "batch_size": 5, "poll_interval": 30.0},
        "pool_size": 3,
    }
    client = Client(conn)
    async with engine_subprocesses(db_dsn, spec, 1, tmp_path) as (worker,):
        try:
            await wait_until(pgqd_connections(conn, 2), timeout=15, what="the worker's connections")
            await client.enqueue_many([JobSpec("nap", {"sleep": 0.05}) for _ in range(JOBS)])
            killed = 0
            for progress in (20, 100):
                await wait_until(logged_at_least(conn, progress), timeout=15, what=f"{progress} jobs in the log")
                killed += await conn.fetchval(KILL_PGQD_CONNECTIONS)
            await wait_until(logged_at_least(conn, JOBS), timeout=30, what="every job in the log")
            # The listener came back: a new job is noticed at once, not at the next poll 30 s away.
            await wait_until(pgqd_connections(conn, 2), timeout=10, what="the worker to reconnect")
            extra = await client.enqueue("nap", {"sleep": 0})
            await wait_until(logged_at_least(conn, JOBS + 1), timeout=5, what="a job enqueued after the reconnect")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{describe([worker])}") from None
        assert worker.alive, describe([worker])
        code = await worker.stop()
    assert code == 0, describe([worker])

    assert killed >= 2, "the worker's connections were not killed in both rounds"
    statuses = await conn.fetch("SELECT status::text, count(*) FROM pgqd_log GROUP BY status")
    assert {row["status"]: row["count"] for row in statuses} == {"successful": JOBS + 1}
    assert await conn.fetchval("SELECT count(*) FROM pgqd_log WHERE job_id = $1", extra) == 1
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs") == 0


class Gate:
    """A handler that holds every job until ``released`` is set, then succeeds or (``"raise"``) fails it."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.released = asyncio.Event()
        self.seen: list[int] = []

    async def __call__(self, job: Job) -> None:
        self.seen.append(job.id)
        await self.released.wait()
        if self.outcome == "raise":
            raise RuntimeError(f"run of job {job.id} by a worker presumed dead")


@pytest.fixture
async def serving(db_dsn: str) -> AsyncIterator[Callable[[Gate], Coroutine[Any, Any, Worker]]]:
    """Starts in-process workers (each on its own PostgresBackend) and stops them all at the end."""
    started: list[tuple[Worker, PostgresBackend, asyncio.Task[None]]] = []

    async def serve(gate: Gate) -> Worker:
        backend = await PostgresBackend.open(db_dsn, pool_size=2)
        settings = WorkerSettings(concurrency=RESCUED, batch_size=RESCUED, poll_interval=0.2, heartbeat_interval=0.1)
        worker = Worker(backend, [Entrypoint("held", gate)], settings)
        started.append((worker, backend, asyncio.create_task(worker.run())))
        await wait_until(_is_set(worker.registered), timeout=5, what="the worker to register")
        return worker

    yield serve
    for worker, _, _ in started:
        worker.stop(0)
    async with asyncio.timeout(10):
        await asyncio.gather(*(task for _, _, task in started))
    for _, backend, _ in started:
        await backend.close()


def _is_set(event: asyncio.Event) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def check() -> bool:
        return event.is_set()

    return check


RESCUED = 5


@pytest.mark.parametrize("stale_run_ends", ["first", "last"])
async def test_a_worker_presumed_dead_writes_no_outcome_for_rescued_jobs(
    conn: Any, serving: Callable[[Gate], Coroutine[Any, Any, Worker]], stale_run_ends: str
) -> None:
    ids = [job_id for job_id in await Client(conn).enqueue_many([JobSpec("held") for _ in range(RESCUED)]) if job_id]
    stale_gate, rescue_gate = Gate("raise"), Gate("succeed")
    presumed_dead = await serving(stale_gate)

    async def picked_by(worker: Worker) -> bool:
        owner = await conn.fetch("SELECT worker_id FROM pgqd_jobs WHERE status = 'picked'")
        return len(owner) == RESCUED and {row["worker_id"] for row in owner} == {worker.worker_id}

    async def all_seen(gate: Gate) -> bool:
        return len(gate.seen) == RESCUED

    await wait_until(lambda: picked_by(presumed_dead), timeout=10, what="the first worker to pick every job")
    await wait_until(lambda: all_seen(stale_gate), timeout=5, what="the first worker's runs to start")
    # The rescue queues them again at once (their first death: tests/test_worker_deaths.py).
    rescued = await PostgresBackend(conn).rescue_worker(presumed_dead.worker_id)
    assert sorted(rescued) == sorted(ids)

    # Every slot of the first worker is busy, so the rescued jobs can only go to the second one.
    rescuer = await serving(rescue_gate)
    await wait_until(lambda: picked_by(rescuer), timeout=10, what="the second worker to pick the rescued jobs")
    await wait_until(lambda: all_seen(rescue_gate), timeout=5, what="the rescued runs to start")

    async def stale_runs_over() -> bool:
        return not presumed_dead.running and presumed_dead.recorder.unwritten == 0

    gates = [stale_gate, rescue_gate] if stale_run_ends == "first" else [rescue_gate, stale_gate]
    for gate in gates:
        gate.released.set()
        if gate is stale_gate:
            await wait_until(stale_runs_over, timeout=5, what="the stale runs to end and be flushed")
        else:
            await wait_until(logged_at_least(conn, RESCUED), timeout=5, what="the rescued runs in the log")

    assert presumed_dead.recorder.recorded == 0, "the worker presumed dead wrote outcomes"
    rows = await conn.fetch("SELECT job_id, status::text, worker_id, attempts FROM pgqd_log ORDER BY job_id")
    assert [row["job_id"] for row in rows] == sorted(ids)
    # The lost runs are not counted: the worker held several jobs, so the loss is charged to none of them.
    assert {(row["status"], row["worker_id"], row["attempts"]) for row in rows} == {
        ("successful", rescuer.worker_id, 1)
    }
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs") == 0
    # The first worker is alive and well: it heart-beats its row back and keeps serving.
    await wait_until(lambda: _row_exists(conn, presumed_dead.worker_id), timeout=5, what="the first worker's heartbeat")
    assert not presumed_dead.stopping


async def _row_exists(conn: Any, worker_id: int) -> bool:
    return bool(await conn.fetchval("SELECT count(*) = 1 FROM pgqd_workers WHERE id = $1", worker_id))


async def test_a_job_claimed_again_after_its_claim_was_undone_runs_once(
    conn: Any, serving: Callable[[Gate], Coroutine[Any, Any, Worker]]
) -> None:
    """Claims commit without waiting for the disk, so a database crash can undo a claim whose jobs are running.
    The worker may then claim them again: the runs under way stand for the new claim, none starts twice."""
    ids = [job_id for job_id in await Client(conn).enqueue_many([JobSpec("held") for _ in range(2)]) if job_id]
    gate = Gate("succeed")
    worker = await serving(gate)

    async def seen_all() -> bool:
        return sorted(gate.seen) == sorted(ids)

    await wait_until(seen_all, timeout=10, what="both runs to start")
    # What crash recovery leaves behind when the claim's commit had not reached the disk.
    undone = await conn.execute(
        "UPDATE pgqd_jobs SET status = 'queued', worker_id = NULL, picked_at = NULL, attempts = attempts - 1 "
        "WHERE id = ANY($1::bigint[])",
        ids,
    )
    assert undone == "UPDATE 2"

    async def picked_again() -> bool:
        owners = await conn.fetch("SELECT worker_id FROM pgqd_jobs WHERE status = 'picked'")
        return [row["worker_id"] for row in owners] == [worker.worker_id] * 2

    await wait_until(picked_again, timeout=10, what="the worker to claim the jobs again")
    assert sorted(worker.running) == sorted(ids)
    gate.released.set()
    await wait_until(logged_at_least(conn, 2), timeout=10, what="both jobs in the log")
    assert sorted(gate.seen) == sorted(ids), "a job started a second time"
    statuses = await conn.fetch("SELECT status::text FROM pgqd_log WHERE job_id = ANY($1::bigint[])", ids)
    assert [row["status"] for row in statuses] == ["successful", "successful"]
    assert worker.running == {}
