"""Retention of workflows on the partitioned log: a workflow's log rows stay past retention while one of its steps
has not ended, and go by the usual retention once the last one has; the lead worker's sweep removes the edges,
steps and workflows of jobs gone from the jobs table and the log, a bounded batch at a time, through indexes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pgqd import Client, Entrypoint, PostgresBackend, Worker, Workflow
from pgqd.daemon.worker.log_partitions import DAY, MAX_SWEEP_BATCHES, LogPartitionUpkeep
from pgqd.identifiers import Names
from tests.support.engine import drain, fast_settings
from tests.test_workflows import Recorder

RETENTION = 7 * DAY
PARTITIONS = "SELECT p.partition::text FROM pgqd_log_partitions() AS p WHERE p.lower_bound IS NOT NULL"
WHERE_IS = "SELECT tableoid::regclass::text AS part, result FROM pgqd_log WHERE job_id = $1"
STEPS = "SELECT COALESCE(array_agg(job_id ORDER BY job_id), '{}') FROM pgqd_workflow_steps"
EDGES = "SELECT COALESCE(array_agg(ARRAY[parent_id, child_id] ORDER BY parent_id, child_id), '{}') FROM pgqd_job_edges"
WORKFLOWS = "SELECT COALESCE(array_agg(id ORDER BY id), '{}') FROM pgqd_workflows"
KEPT = "SELECT COALESCE(array_agg(workflow_id ORDER BY workflow_id), '{}') FROM pgqd_log_kept"


@pytest.fixture
async def backend(db_dsn: str) -> AsyncIterator[PostgresBackend]:
    opened = await PostgresBackend.open(db_dsn)
    yield opened
    await opened.close()


@pytest.fixture
async def upkeep(db_dsn: str) -> AsyncIterator[LogPartitionUpkeep]:
    keeper = LogPartitionUpkeep(db_dsn, Names(), retention=RETENTION)
    yield keeper
    keeper.close()


async def days_ago(conn: Any, days: int) -> datetime:
    now: datetime = await conn.fetchval("SELECT now()")
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)


async def add_day(conn: Any, day: datetime) -> str:
    name: str = await conn.fetchval("SELECT pgqd_log_add_partition($1, $2)", day, day + timedelta(days=1))
    return name


async def backdate(conn: Any, job_ids: list[int], day: datetime, workflow_id: int | None = None) -> None:
    """Dates jobs (and their workflow) as if enqueued at ``day``, 00:00, and the ended ones as finished at 01:00:
    into that day's partition, or the default partition if it has none. The steps of a workflow are enqueued by
    one statement, so they always share its created_at; the upkeep relies on that."""
    await conn.execute("UPDATE pgqd_jobs SET created_at = $2 WHERE id = ANY($1::bigint[])", job_ids, day)
    await conn.execute(
        "UPDATE pgqd_log SET created_at = $2::timestamptz, finished_at = $2::timestamptz + interval '1 hour' "
        "WHERE job_id = ANY($1::bigint[])",
        job_ids,
        day,
    )
    if workflow_id is not None:
        await conn.execute("UPDATE pgqd_workflows SET created_at = $2 WHERE id = $1", workflow_id, day)


def gate_worker(backend: PostgresBackend, recorder: Recorder) -> Worker:
    return Worker(backend, [Entrypoint("later", recorder.step)], fast_settings())


async def test_a_parents_row_past_retention_stays_while_a_step_waits_and_goes_once_the_workflow_ended(
    conn: Any, backend: PostgresBackend, upkeep: LogPartitionUpkeep
) -> None:
    client, recorder = Client(backend), Recorder()
    wf = Workflow("long")
    first = wf.add("step", {"value": "kept"}, name="first")
    gate = wf.add("later", name="gate")  # no worker serves it yet: the last step waits for it
    wf.add("step", after=[first, gate], name="last")
    run = await client.enqueue_workflow(wf)
    await drain(recorder.worker(backend))
    assert (await client.status(run["last"]))[run["last"]].status == "waiting"
    old_day = await days_ago(conn, 9)
    old_partition = await add_day(conn, old_day)
    await backdate(conn, run.ids, old_day, run.id)

    plan = await upkeep.step()
    assert plan is not None
    assert old_partition in [p.name for p in plan.drop]
    assert old_partition not in [r[0] for r in await conn.fetch(PARTITIONS)]
    row = await conn.fetchrow(WHERE_IS, run["first"])
    assert row["part"] == "pgqd_log_default"
    assert json.loads(row["result"]) == "kept"
    assert await conn.fetchval(KEPT) == [run.id]
    await upkeep.step()  # the default partition's prune passes over the kept row, round after round
    assert (await conn.fetchrow(WHERE_IS, run["first"]))["part"] == "pgqd_log_default"
    assert await conn.fetchval(STEPS) == sorted(run.ids)

    await drain(gate_worker(backend, recorder))
    await drain(recorder.worker(backend))
    assert recorder.seen[run["last"]] == {run["first"]: "kept", "first": "kept"}
    view = await client.workflow(run.id)
    assert view is not None
    assert view.counts() == {"successful": 3}

    await upkeep.step()
    assert await conn.fetchrow(WHERE_IS, run["first"]) is None
    assert await conn.fetchval(KEPT) == []
    # The first step's row is gone and its step with it; the other two are logged today, as are their edges.
    assert await conn.fetchval(STEPS) == sorted([run["gate"], run["last"]])
    assert await conn.fetchval(EDGES) == [[run["first"], run["last"]], [run["gate"], run["last"]]]
    assert await conn.fetchval(WORKFLOWS) == [run.id]


async def test_rows_of_a_live_workflow_found_in_the_default_partition_are_kept_until_it_ends(
    conn: Any, backend: PostgresBackend, upkeep: LogPartitionUpkeep
) -> None:
    client, recorder = Client(backend), Recorder()
    wf = Workflow()
    first = wf.add("step", {"value": 1}, name="first")
    wf.add("later", after=first, name="then")
    run = await client.enqueue_workflow(wf)
    plain = await client.enqueue("step", {"value": 2})  # in no workflow: pruned as usual
    assert plain is not None
    await drain(recorder.worker(backend))
    old_day = await days_ago(conn, 20)  # no partition: the rows land in the default partition
    await backdate(conn, [*run.ids, plain], old_day, run.id)
    assert (await conn.fetchrow(WHERE_IS, run["first"]))["part"] == "pgqd_log_default"

    await upkeep.step()
    assert await conn.fetchrow(WHERE_IS, plain) is None
    assert (await conn.fetchrow(WHERE_IS, run["first"]))["part"] == "pgqd_log_default"
    assert await conn.fetchval(KEPT) == [run.id]

    await drain(gate_worker(backend, recorder))
    await upkeep.step()
    assert await conn.fetchrow(WHERE_IS, run["first"]) is None
    assert await conn.fetchval(KEPT) == []


async def test_the_sweep_takes_the_edges_steps_and_workflows_of_dropped_jobs_and_never_a_live_jobs(
    conn: Any, backend: PostgresBackend, upkeep: LogPartitionUpkeep
) -> None:
    client, recorder = Client(backend), Recorder()
    done_wf = Workflow("done")
    done_wf.chain("step", "step")
    done = await client.enqueue_workflow(done_wf)
    live_wf = Workflow("live")
    x = live_wf.add("step", {"value": "x"}, name="x")
    live_wf.add("later", after=x, name="y")
    live = await client.enqueue_workflow(live_wf)
    parent = await client.enqueue("step", {"value": "for the child"})
    assert parent is not None
    child = await client.enqueue("later", after=[parent])  # no workflow; runs long after its parent's day
    assert child is not None
    await drain(recorder.worker(backend))
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs WHERE status = 'queued'") == 2  # y and the child

    old_day = await days_ago(conn, 9)
    await add_day(conn, old_day)
    await backdate(conn, done.ids, old_day, done.id)
    await backdate(conn, live.ids, old_day, live.id)
    await backdate(conn, [parent, child], old_day)
    await upkeep.step()

    for gone in (*done.ids, parent):
        assert await conn.fetchrow(WHERE_IS, gone) is None
    assert await conn.fetchval(STEPS) == sorted(live.ids)
    assert await conn.fetchval(EDGES) == sorted([[parent, child], [live["x"], live["y"]]])
    assert await conn.fetchval(WORKFLOWS) == [live.id]
    # A child not yet run reads its parent's result from the edge, whatever retention did to the parent's row.
    assert await backend.parent_results(child) == {parent: "for the child"}
    assert await backend.parent_results(live["y"]) == {live["x"]: "x", "x": "x"}


async def test_the_sweep_looks_at_a_bounded_batch_of_jobs_per_call_and_per_round(
    conn: Any, backend: PostgresBackend, db_dsn: str
) -> None:
    live = await Client(backend).enqueue("later")
    assert live is not None
    orphans = list(range(10_000_001, 10_000_251))
    await conn.execute("INSERT INTO pgqd_workflows (id, name) VALUES (77, 'pruned'), (78, 'live')")
    await conn.execute("INSERT INTO pgqd_workflow_steps (job_id, workflow_id) SELECT unnest($1::bigint[]), 77", orphans)
    await conn.execute("INSERT INTO pgqd_workflow_steps (job_id, workflow_id) VALUES ($1, 78)", live)
    await conn.execute("INSERT INTO pgqd_job_edges (parent_id, child_id) VALUES ($1, $2)", orphans[0], live)
    await conn.execute("UPDATE pgqd_log_sweep SET from_id = 1, until_id = 20000000")

    assert await conn.fetchval("SELECT pgqd_log_sweep_workflows(10)") == 10
    assert await conn.fetchval(STEPS) == [live, *orphans[9:]]  # the ten lowest ids: the live job's stays
    keeper = LogPartitionUpkeep(db_dsn, Names(), retention=RETENTION, sweep_batch=10)
    try:
        await keeper.step()
        assert len(await conn.fetchval(STEPS)) == 1 + 241 - 10 * MAX_SWEEP_BATCHES
        for _ in range(3):
            await keeper.step()
    finally:
        keeper.close()
    assert await conn.fetchval(STEPS) == [live]
    assert await conn.fetchval(WORKFLOWS) == [78]
    assert await conn.fetchval(EDGES) == [[orphans[0], live]]  # into a live child: its parent's result
    assert await conn.fetchval("SELECT from_id > until_id FROM pgqd_log_sweep")


SCANS = "SELECT relid, seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relid = ANY($1::oid[])"


async def scans(conn: Any, tables: dict[str, int], call: str, *args: Any) -> dict[str, tuple[int, int]]:
    """The sequential and index scans of ``tables`` (name: oid) that one run of ``call`` made. Counted before and
    after it within its transaction: the counts may also hold those of earlier transactions not reported yet."""

    async def counts() -> dict[int, tuple[int, int]]:
        return {r["relid"]: (r["seq_scan"], r["idx_scan"]) for r in await conn.fetch(SCANS, list(tables.values()))}

    async with conn.transaction():
        before = await counts()
        await conn.fetchval(call, *args)
        after = await counts()
    made = {}
    for name, oid in tables.items():
        (seq_after, idx_after), (seq_before, idx_before) = after.get(oid, (0, 0)), before.get(oid, (0, 0))
        made[name] = (seq_after - seq_before, idx_after - idx_before)
    return made


async def test_the_drop_and_the_sweep_read_the_log_and_the_steps_through_their_indexes(conn: Any) -> None:
    yesterday, old_day = await days_ago(conn, 1), await days_ago(conn, 9)
    old_partition = await add_day(conn, old_day)
    if await conn.fetchval("SELECT to_regclass($1)", f"pgqd_log_{yesterday:%Y%m%d}") is None:
        await add_day(conn, yesterday)
    recent_partition = f"pgqd_log_{yesterday:%Y%m%d}"
    # 60,000 jobs of 6,000 ten-step workflows over two days; workflow 1 still has a step to run.
    await conn.execute(
        "INSERT INTO pgqd_log (job_id, entrypoint, priority, status, attempts, created_at, finished_at) "
        "SELECT g, 'e', 0, 'successful', 1, t.d, t.d + interval '1 hour' "
        "FROM generate_series(1, 60000) AS g, "
        "LATERAL (SELECT CASE WHEN g <= 30000 THEN $1::timestamptz ELSE $2 END AS d) AS t "
        "WHERE g <> 10",
        old_day,
        yesterday,
    )
    await conn.execute(
        "INSERT INTO pgqd_jobs (id, entrypoint, status, created_at) VALUES (10, 'e', 'waiting', $1)", old_day
    )
    await conn.execute("INSERT INTO pgqd_workflows (id) SELECT generate_series(1, 6000)")
    await conn.execute(
        "INSERT INTO pgqd_workflow_steps (job_id, workflow_id) "
        "SELECT g, (g - 1) / 10 + 1 FROM generate_series(1, 60000) AS g"
    )
    await conn.execute(
        "INSERT INTO pgqd_job_edges (parent_id, child_id) SELECT g - 1, g FROM generate_series(2, 60000) g"
    )
    await conn.execute("ANALYZE")
    tables = {
        name: await conn.fetchval("SELECT $1::text::regclass::oid", name)
        for name in (old_partition, recent_partition, "pgqd_workflow_steps", "pgqd_job_edges")
    }

    during_drop = await scans(
        conn, tables, "SELECT pgqd_log_drop_partition($1::regclass, $2)", old_partition, old_day + timedelta(1)
    )
    assert during_drop["pgqd_workflow_steps"][0] == 0
    assert during_drop[old_partition][0] == 0
    assert await conn.fetchval("SELECT count(*) FROM pgqd_log_default") == 9  # workflow 1's ended steps

    during_sweep = await scans(conn, tables, "SELECT pgqd_log_sweep_workflows(500)")
    assert all(seq == 0 for seq, _ in during_sweep.values()), during_sweep
    assert during_sweep[recent_partition][1] >= 499  # a probe per job looked at (the live one may need none)
    assert await conn.fetchval("SELECT count(*) FROM pgqd_workflow_steps WHERE job_id <= 500") == 10
