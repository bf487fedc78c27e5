"""A job that kills its worker process, in the real daemon: after two deaths among other jobs it runs alone, it
is given up after its death budget, and neither the daemon nor the jobs around it suffer for it
(docs/reliability.md, "When a worker dies")."""

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
    # The supervisor kills the silent worker, unless the other worker's stale-heartbeat rescue gets there first.
    "block": (
        "tests.support.daemon_app:loop_blocker",
        ("killed for not checking in: event loop blocked", "no heartbeat"),
    ),
}


def poison_config(kind: str, max_worker_deaths: int, concurrency: int) -> str:
    handler, _ = POISONS[kind]
    extra = f"""
[entrypoints.poison]
handler = "{handler}"
max_worker_deaths = {max_worker_deaths}
"""
    config = daemon_config(processes=2, worker_timeout="2s", extra=extra)
    return config.replace("concurrency = 10", f"concurrency = {concurrency}")


async def run_poison(
    db: Any, start_daemon: StartDaemon, kind: str, max_worker_deaths: int, ordinary: int, concurrency: int = 10
) -> None:
    daemon = start_daemon(poison_config(kind, max_worker_deaths, concurrency)).wait_ready()
    client = Client(db)
    # The poison sits in the middle of the queue, claimed in a batch with ordinary jobs, which take long enough
    # that a worker holds many of them when it dies.
    jobs = [JobSpec("sleeper", "0.05") for _ in range(ordinary)]
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
    assert poison.error is not None
    assert poison.error.type == "pgqd.WorkerLost"
    assert poison.error.message.startswith("killed its worker process (")
    assert any(cause in poison.error.message for cause in POISONS[kind][1]), poison.error.message
    assert f"in death {max_worker_deaths} of {max_worker_deaths} allowed: given up" in poison.error.message
    # The documented bound: two deaths among other jobs (then it is a suspect), then max_worker_deaths alone.
    runs = await db.fetchval("SELECT count(*) FROM test_runs WHERE job_id = $1", poison_id)
    assert max_worker_deaths <= runs <= max_worker_deaths + 2
    # Every ordinary job succeeded, and no lost run was charged to any of them.
    rows = await db.fetch("SELECT status::text, attempts FROM pgqd_log WHERE job_id = ANY($1::bigint[])", ids)
    assert len(rows) == ordinary
    assert {row["status"] for row in rows} == {"successful"}
    assert {row["attempts"] for row in rows} == {1}
    assert await db.fetchval("SELECT count(*) FROM pgqd_jobs") == 0
    assert daemon.stop() == 0


@pytest.mark.parametrize(("kind", "max_worker_deaths"), [("exit", 3), ("exit", 6), ("block", 3)])
async def test_a_job_that_kills_its_worker_is_given_up_after_its_budget_and_the_daemon_and_other_jobs_live_on(
    db: Any, start_daemon: StartDaemon, kind: str, max_worker_deaths: int
) -> None:
    await run_poison(db, start_daemon, kind, max_worker_deaths, ordinary=500)


async def test_at_high_concurrency_no_bystander_of_a_poison_job_is_given_up_or_charged_a_run(
    db: Any, start_daemon: StartDaemon
) -> None:
    await run_poison(db, start_daemon, "exit", 3, ordinary=2000, concurrency=64)
