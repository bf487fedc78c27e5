"""Workflows in the real daemon across a fleet: a fan-in whose parents end at once on two daemons releases its
child exactly once, and a worker SIGKILLed in the middle of a workflow loses nothing. In every case no step
starts before each of its parents finished a successful run, and no step is left waiting."""

from __future__ import annotations

import os
import random
import signal
from typing import Any

import pytest

from pgqd import Client, JobSpec, Workflow
from tests.support.daemon import StartDaemon, daemon_config
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


async def steps_started_after_their_parents(db: Any, workflow_id: int) -> list[Any]:
    """Steps whose first run started before one of their parents' successful run ended (expected: none)."""
    return list(
        await db.fetch(
            """
            SELECT e.child_id, e.parent_id
            FROM pgqd_workflow_steps AS s JOIN pgqd_job_edges AS e ON e.child_id = s.job_id
            WHERE s.workflow_id = $1
              AND (SELECT min(c.started) FROM test_runs AS c WHERE c.job_id = e.child_id)
                  < (SELECT max(p.ended) FROM test_runs AS p WHERE p.job_id = e.parent_id)
            """,
            workflow_id,
        )
    )


async def workflow_done(client: Client, workflow_id: int) -> dict[str, int]:
    view = await client.workflow(workflow_id)
    assert view is not None
    return view.counts() if view.ended else {}


async def test_a_fan_in_of_two_thousand_parents_ending_on_two_daemons_releases_its_child_once(
    db: Any, start_daemon: StartDaemon
) -> None:
    config = daemon_config(processes=2)
    start_daemon(config).wait_ready()
    start_daemon(config).wait_ready()
    client = Client(db)
    wf = Workflow("fan-in")
    callback = wf.chord([JobSpec("sleeper") for _ in range(2000)], JobSpec("sleeper"))
    run = await client.enqueue_workflow(wf)

    counts = await wait_until(lambda: workflow_done(client, run.id), timeout=120, what="the fan-in to end")

    assert counts == {"successful": 2001}
    assert await db.fetchval("SELECT count(*) FROM test_runs WHERE job_id = $1", run[callback.name]) == 1
    assert await db.fetchval("SELECT count(DISTINCT pid) FROM test_runs") >= 2
    assert await steps_started_after_their_parents(db, run.id) == []


async def test_a_worker_killed_in_the_middle_of_a_workflow_loses_no_step_and_runs_none_early(
    db: Any, start_daemon: StartDaemon
) -> None:
    daemon = start_daemon(daemon_config(processes=2, worker_timeout="3s")).wait_ready()
    client = Client(db)
    wf = Workflow("layers")
    layer = wf.group(*(JobSpec("sleeper", "0.3") for _ in range(12)))
    for _ in range(4):
        layer = [wf.add("sleeper", "0.3", after=layer[n : n + 3] or layer[:3]) for n in range(0, 12, 1)]
    run = await client.enqueue_workflow(wf)

    async def running_on_a_worker() -> int | None:
        return await db.fetchval(  # type: ignore[no-any-return]
            "SELECT pid FROM test_runs WHERE ended IS NULL AND job_id > $1 LIMIT 1", run.ids[11]
        )

    victim = await wait_until(running_on_a_worker, timeout=60, what="a later layer running")
    assert victim in daemon.worker_pids()
    os.kill(victim, signal.SIGKILL)

    counts = await wait_until(lambda: workflow_done(client, run.id), timeout=120, what="the workflow to end")

    assert counts == {"successful": len(run.ids)}
    assert await db.fetchval("SELECT count(*) FROM test_runs WHERE pid = $1 AND ended IS NULL", victim) >= 1
    assert await steps_started_after_their_parents(db, run.id) == []


async def test_children_enqueued_while_their_parents_end_are_released_exactly_once(
    db: Any, start_daemon: StartDaemon
) -> None:
    start_daemon(daemon_config(processes=2)).wait_ready()
    client = Client(db)
    parents = [i for i in await client.enqueue_many([JobSpec("sleeper", "0.02") for _ in range(400)]) if i]
    rng = random.Random(7)
    children: list[int] = []
    # Named while the parents are queued, running, being recorded or already ended.
    for _ in range(40):
        batch = [JobSpec("sleeper", after=rng.sample(parents, 3)) for _ in range(10)]
        children += [i for i in await client.enqueue_many(batch) if i]

    async def all_children_ended() -> bool:
        states = await client.status(children)
        return all(state.finished for state in states.values())

    await wait_until(all_children_ended, timeout=120, what="every child to end")
    assert {s.status for s in (await client.status(children)).values()} == {"successful"}
    assert await db.fetchval("SELECT count(*) FROM test_runs WHERE job_id = ANY($1::bigint[])", children) == 400
    early = await db.fetchval(
        """SELECT count(*) FROM pgqd_job_edges AS e
           WHERE e.child_id = ANY($1::bigint[])
             AND (SELECT min(c.started) FROM test_runs AS c WHERE c.job_id = e.child_id)
                 < (SELECT max(p.ended) FROM test_runs AS p WHERE p.job_id = e.parent_id)""",
        children,
    )
    assert early == 0
