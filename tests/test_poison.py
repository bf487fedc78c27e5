"""A job that kills its worker process, in the real daemon: it is given up after its budget, alone, and neither
the daemon nor the jobs around it suffer for it (the quarantine of suspects, docs/reliability.md)."""

from __future__ import annotations

from typing import Any

import pytest

from pgqd import Client, JobSpec
from tests.support.daemon import StartDaemon, daemon_config
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

POISONS = {
    # handler, what the supervisor or the fleet saw
    "exit": ("tests.support.daemon_app:kills_its_process", ("exit status 1",)),
    # The supervisor's watchdog kills the worker, unless the other worker's stale-heartbeat rescue gets there first.
    "block": ("tests.support.daemon_app:loop_blocker", ("killed by the watchdog: event loop blocked", "no heartbeat")),
}


def poison_config(kind: str, max_attempts: int) -> str:
    handler, _ = POISONS[kind]
    extra = f"""
[entrypoints.poison]
handler = "{handler}"
retry = {{ max_attempts = {max_attempts}, initial = "10ms", jitter = false }}
"""
    return daemon_config(processes=2, worker_timeout="2s", extra=extra)


async def run_poison(db: Any, start_daemon: StartDaemon, kind: str, max_attempts: int, ordinary: int) -> None:
    daemon = start_daemon(poison_config(kind, max_attempts)).wait_ready()
    client = Client(db)
    # The poison sits in the middle of the queue, claimed in a batch with ordinary jobs.
    jobs = [JobSpec("sleeper", "0.005") for _ in range(ordinary)]
    jobs.insert(ordinary // 4, JobSpec("poison", "60"))
    ids = [i for i in await client.enqueue_many(jobs) if i is not None]
    poison_id = ids.pop(ordinary // 4)

    async def everything_ended() -> bool:
        return bool(await db.fetchval("SELECT count(*) = $1 FROM pgqd_log", ordinary + 1))

    await wait_until(everything_ended, timeout=150, what="every job to end")

    assert daemon.process is not None
    assert daemon.process.poll() is None, "the daemon stopped"
    poison = (await client.status([poison_id]))[poison_id]
    assert poison.status == "exception"
    assert poison.attempts == max_attempts
    assert poison.error is not None
    assert poison.error.type == "pgqd.WorkerLost"
    assert poison.error.message.startswith("killed its worker process (")
    assert any(cause in poison.error.message for cause in POISONS[kind][1]), poison.error.message
    assert f"in run {max_attempts} of {max_attempts}: given up" in poison.error.message
    # Its runs alone are max_attempts; before it was a suspect it may have run once among others.
    runs = await db.fetchval("SELECT count(*) FROM test_runs WHERE job_id = $1", poison_id)
    assert max_attempts <= runs <= max_attempts + 1
    # Every ordinary job succeeded, and no lost run was charged to any of them.
    rows = await db.fetch("SELECT status::text, attempts FROM pgqd_log WHERE job_id = ANY($1::bigint[])", ids)
    assert len(rows) == ordinary
    assert {row["status"] for row in rows} == {"successful"}
    assert {row["attempts"] for row in rows} == {1}
    assert await db.fetchval("SELECT count(*) FROM pgqd_jobs") == 0
    assert daemon.stop() == 0


@pytest.mark.parametrize(("kind", "max_attempts"), [("exit", 3), ("exit", 10), ("block", 3), ("block", 10)])
async def test_a_job_that_kills_its_worker_is_given_up_after_its_budget_and_the_daemon_and_other_jobs_live_on(
    db: Any, start_daemon: StartDaemon, kind: str, max_attempts: int
) -> None:
    await run_poison(db, start_daemon, kind, max_attempts, ordinary=500)


async def test_no_bystander_of_a_poison_job_is_given_up_or_charged_a_run(db: Any, start_daemon: StartDaemon) -> None:
    await run_poison(db, start_daemon, "exit", 3, ordinary=400)
