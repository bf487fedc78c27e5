"""The log partitioned by day: days created ahead by the lead worker, rows that found no partition moved into
one, days past retention dropped whole, queries that read only their days, and an upgrade of a log full of
rows that keeps them while the previous version's statements go on working."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from benchmarks.log_scale import PREVIOUS_PRUNE_LOG
from pgqd.config.load import parse_config
from pgqd.daemon.supervisor.runtime import worker_plan
from pgqd.daemon.worker.log_partitions import DAY, LogPartitionUpkeep, Partition, plan_partitions, uncovered
from pgqd.identifiers import Names
from pgqd.ops.browse import JobFilter, JobSearch
from pgqd.schema import apply_upgrade, installed_version
from pgqd.sql import latest_version, migrations, render
from pgqd.sql.grants import grant_statements
from pgqd.sql.statements import JOB_STATES
from pgqd.sql.stats import THROUGHPUT_SERIES
from tests.support.daemon import StartDaemon, daemon_config
from tests.support.waiting import wait_until

NAMES = Names()
THIS_MIGRATION = "partitioned_log"
PARTITIONS = """
SELECT p.partition::text AS name, p.lower_bound, p.upper_bound FROM pgqd_log_partitions() AS p
WHERE p.lower_bound IS NOT NULL ORDER BY p.lower_bound
"""
# Log rows as the outcome statements write them, finished at the times given ($1: first id).
INSERT_ROWS = """
INSERT INTO pgqd_log (job_id, entrypoint, priority, status, attempts, created_at, finished_at)
SELECT $1::bigint + i, 'e', 0, 'successful', 1, f - interval '1 second', f
FROM unnest($2::timestamptz[]) WITH ORDINALITY AS u(f, i)
"""
WHERE_ROWS_ARE = "SELECT tableoid::regclass::text AS part, count(*) AS n FROM pgqd_log GROUP BY 1 ORDER BY 1"


def day_start(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


async def server_now(conn: Any) -> datetime:
    now: datetime = await conn.fetchval("SELECT now()")
    return now.astimezone(UTC)


# --- the plan, on its own -------------------------------------------------------------------------------------

NOW = 100 * DAY + 3600.0  # 01:00 UTC on day 100


def days(*numbers: int) -> list[Partition]:
    return [Partition(f"d{n}", n * DAY, (n + 1) * DAY) for n in numbers]


def test_a_log_without_partitions_gets_today_and_the_days_ahead() -> None:
    plan = plan_partitions([], [], NOW, retention=7 * DAY)
    assert plan.add == [(n * DAY, (n + 1) * DAY) for n in range(100, 104)]
    assert (plan.drop, plan.prune_default_before) == ([], None)


def test_only_missing_days_and_the_uncovered_part_of_a_day_are_created() -> None:
    first = Partition("since_upgrade", 100 * DAY + 600, 101 * DAY)
    plan = plan_partitions([Partition("before", float("-inf"), first.lower), first, *days(102)], [], NOW, None)
    assert plan.add == [(101 * DAY, 102 * DAY), (103 * DAY, 104 * DAY)]
    assert uncovered(0, 10, [Partition("a", 2, 4), Partition("b", 6, 8)]) == [(0, 2), (4, 6), (8, 10)]


def test_partitions_wholly_past_retention_are_dropped_and_the_one_across_the_cutoff_is_kept() -> None:
    legacy = Partition("legacy", float("-inf"), 91 * DAY + 5)
    plan = plan_partitions([legacy, *days(92, 93, 94, 100, 101, 102, 103)], [], NOW, retention=7 * DAY)
    assert [p.name for p in plan.drop] == ["legacy", "d92"]  # day 93 ends after the cutoff (day 93, 01:00)
    assert plan_partitions([legacy, *days(92)], [], NOW, retention=None).drop == []


def test_rows_in_the_default_partition_get_their_day_unless_it_is_past_retention() -> None:
    plan = plan_partitions(days(100, 101, 102, 103), [50 * DAY, 98 * DAY, 400 * DAY], NOW, retention=7 * DAY)
    assert plan.add == [(98 * DAY, 99 * DAY), (400 * DAY, 401 * DAY)]
    assert plan.prune_default_before == NOW - 7 * DAY


def test_only_the_lead_worker_keeps_the_partitions() -> None:
    config = parse_config('[entrypoints.a]\nhandler = "tests.support.daemon_app:sleeper"\n')
    plans = [worker_plan(config, {"a": print}, None, 0, None, lead=lead, queue_gauges=False) for lead in (True, False)]
    assert [plan.log_partitions for plan in plans] == [True, False]


# --- on PostgreSQL -----------------------------------------------------------------------------------------------


@pytest.fixture
async def upkeep(db_dsn: str) -> AsyncIterator[LogPartitionUpkeep]:
    keeper = LogPartitionUpkeep(db_dsn, NAMES, retention=7 * DAY)
    yield keeper
    keeper.close()


async def test_install_partitions_the_log_by_day_from_now_with_days_ahead_and_a_default(conn: Any) -> None:
    assert await conn.fetchval("SELECT relkind FROM pg_class WHERE relname = 'pgqd_log'") == b"p"
    parts = await conn.fetch(PARTITIONS)
    now = await server_now(conn)
    assert parts[0]["lower_bound"] == day_start(now)  # a new install: whole days
    assert parts[-1]["upper_bound"] == day_start(now) + timedelta(days=4)
    assert all(a["upper_bound"] == b["lower_bound"] for a, b in itertools.pairwise(parts))
    assert await conn.fetchval("SELECT to_regclass('pgqd_log_default')") == "pgqd_log_default"


async def test_an_outcome_lands_in_the_partition_of_its_day_and_a_dated_row_without_one_in_the_default(
    conn: Any,
) -> None:
    now = await server_now(conn)
    await conn.execute(INSERT_ROWS, 10_000, [now, now + timedelta(days=30)])
    rows = await conn.fetch(WHERE_ROWS_ARE)
    assert {r["part"]: r["n"] for r in rows} == {(await conn.fetch(PARTITIONS))[0]["name"]: 1, "pgqd_log_default": 1}


async def test_the_upkeep_creates_a_missing_day_and_moves_its_rows_out_of_the_default_partition(
    conn: Any, upkeep: LogPartitionUpkeep
) -> None:
    tomorrow = day_start(await server_now(conn)) + timedelta(days=1)
    name = f"pgqd_log_{tomorrow:%Y%m%d}"
    await conn.execute(f"DROP TABLE {name}")
    await conn.execute(INSERT_ROWS, 0, [tomorrow + timedelta(hours=h) for h in range(5)])
    assert {r["part"] for r in await conn.fetch(WHERE_ROWS_ARE)} == {"pgqd_log_default"}

    plan = await upkeep.step()
    assert plan is not None
    assert plan.add == [(tomorrow.timestamp(), tomorrow.timestamp() + DAY)]
    assert [dict(r) for r in await conn.fetch(WHERE_ROWS_ARE)] == [{"part": name, "n": 5}]
    assert (await upkeep.step()) is not None  # nothing left to do, and no error
    assert upkeep.rounds == 2


async def test_outcomes_written_into_a_day_while_its_partition_is_created_all_land_in_it(
    conn: Any, db_dsn: str, upkeep: LogPartitionUpkeep
) -> None:
    tomorrow = day_start(await server_now(conn)) + timedelta(days=1)
    name = f"pgqd_log_{tomorrow:%Y%m%d}"
    await conn.execute(f"DROP TABLE {name}")
    writer = await asyncpg.connect(db_dsn)
    written = 0
    stop = asyncio.Event()

    async def write_outcomes() -> None:  # rows of that day, before, during and after: none may be refused
        nonlocal written
        while not stop.is_set():
            await writer.execute(INSERT_ROWS, 1000 * written, [tomorrow + timedelta(seconds=written)])
            written += 1
            await asyncio.sleep(0.001)

    try:
        writing = asyncio.create_task(write_outcomes())
        await asyncio.sleep(0.2)
        for _ in range(3):
            await upkeep.step()
        await asyncio.sleep(0.2)
        stop.set()
        await writing
    finally:
        await writer.close()
    assert [dict(r) for r in await conn.fetch(WHERE_ROWS_ARE)] == [{"part": name, "n": written}]


async def test_the_upkeep_drops_days_past_retention_and_deletes_old_rows_of_the_default_partition(
    conn: Any, upkeep: LogPartitionUpkeep
) -> None:
    today = day_start(await server_now(conn))
    old_day, recent_day, ancient = today - timedelta(days=9), today - timedelta(days=3), today - timedelta(days=20)
    await conn.fetchval("SELECT pgqd_log_add_partition($1, $2)", old_day, old_day + timedelta(days=1))
    await conn.execute(INSERT_ROWS, 0, [old_day + timedelta(minutes=m) for m in range(100)])
    await conn.execute(INSERT_ROWS, 1000, [ancient, recent_day + timedelta(hours=2)])  # no partition: default

    await upkeep.step()
    names = [r["name"] for r in await conn.fetch(PARTITIONS)]
    assert f"pgqd_log_{old_day:%Y%m%d}" not in names
    assert names[0] == f"pgqd_log_{recent_day:%Y%m%d}"
    # Detached first, then dropped on its own: nothing of the day is left.
    assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname LIKE 'pgqd\\_log\\_x%'") == 0
    assert [dict(r) for r in await conn.fetch(WHERE_ROWS_ARE)] == [{"part": names[0], "n": 1}]


async def test_a_drop_gives_up_while_a_long_read_holds_the_log_and_succeeds_after_it(
    conn: Any, db_dsn: str, upkeep: LogPartitionUpkeep
) -> None:
    old_day = day_start(await server_now(conn)) - timedelta(days=10)
    await conn.fetchval("SELECT pgqd_log_add_partition($1, $2)", old_day, old_day + timedelta(days=1))
    reader = await asyncpg.connect(db_dsn)
    try:
        async with reader.transaction():
            await reader.fetchval("SELECT count(*) FROM pgqd_log")  # holds a lock on every partition
            await upkeep.step()
            assert f"pgqd_log_{old_day:%Y%m%d}" in [r["name"] for r in await conn.fetch(PARTITIONS)]
            # Outcome writes were never stuck behind the waiting DROP for longer than its lock timeout.
            await asyncio.wait_for(conn.execute(INSERT_ROWS, 0, [await server_now(conn)]), timeout=5)
        await upkeep.step()
        assert f"pgqd_log_{old_day:%Y%m%d}" not in [r["name"] for r in await conn.fetch(PARTITIONS)]
    finally:
        await reader.close()


@pytest.fixture
async def worker_role(pg_server: str, db_dsn: str) -> AsyncIterator[str]:
    role = f"pgqd_worker_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_server)
    owner = await asyncpg.connect(db_dsn)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        for statement in grant_statements(NAMES, None, role)[1:]:
            await owner.execute(statement)
        yield urlsplit(db_dsn)._replace(netloc=f"{role}@{urlsplit(db_dsn).netloc.rpartition('@')[2]}").geturl()
    finally:
        await owner.execute(f'DROP OWNED BY "{role}"')
        await owner.close()
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_a_worker_role_with_the_grants_of_pgqd_grants_keeps_the_partitions(conn: Any, worker_role: str) -> None:
    tomorrow = day_start(await server_now(conn)) + timedelta(days=1)
    await conn.execute(f"DROP TABLE pgqd_log_{tomorrow:%Y%m%d}")
    keeper = LogPartitionUpkeep(worker_role, NAMES, retention=7 * DAY)
    try:
        assert (await keeper.step()) is not None
    finally:
        keeper.close()
    assert f"pgqd_log_{tomorrow:%Y%m%d}" in [r["name"] for r in await conn.fetch(PARTITIONS)]


async def test_a_running_daemon_creates_the_days_ahead(conn: Any, start_daemon: StartDaemon) -> None:
    tomorrow = day_start(await server_now(conn)) + timedelta(days=1)
    await conn.execute(f"DROP TABLE pgqd_log_{tomorrow:%Y%m%d}")
    start_daemon(daemon_config(processes=1)).wait_ready()

    async def created() -> bool:
        return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"pgqd_log_{tomorrow:%Y%m%d}"))

    await wait_until(created, timeout=30, what="the lead worker's partition for tomorrow")


# --- reads that prune partitions ---------------------------------------------------------------------------------


def relations_read(node: dict[str, Any]) -> dict[str, int]:
    """The relations an executed plan read (partitions pruned at start-up are absent), with the rows it read."""
    found = {}
    if "Relation Name" in node:
        found[node["Relation Name"]] = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
    for child in node.get("Plans", []):
        found |= relations_read(child)
    return found


async def test_the_chart_reads_only_the_last_hours_partitions_through_their_b_tree(conn: Any) -> None:
    now = await server_now(conn)
    yesterday = day_start(now) - timedelta(days=1)
    await conn.fetchval("SELECT pgqd_log_add_partition($1, $2)", yesterday, yesterday + timedelta(days=1))
    await conn.execute(INSERT_ROWS, 0, [yesterday + timedelta(seconds=s) for s in range(0, 86400, 2)])
    await conn.execute(INSERT_ROWS, 100_000, [now - timedelta(seconds=s) for s in range(0, 600, 2)])
    # Rows scattered by a mass delete and reused space do not matter: the B-tree does not depend on their order.
    await conn.execute("DELETE FROM pgqd_log WHERE job_id % 3 = 0")
    await conn.execute("VACUUM ANALYZE pgqd_log")
    plan = await conn.fetchval(
        "EXPLAIN (ANALYZE, FORMAT JSON) "
        + render(THROUGHPUT_SERIES, NAMES)
        .replace("$1", "600::float8")
        .replace("$2", "60::float8")
        .replace("$3", "NULL"),
    )
    read = relations_read(json.loads(plan)[0]["Plan"])
    # Yesterday's 43,200 rows are not looked at: only today's partition and those after it (empty, and the
    # default partition that holds anything beyond them).
    assert read.get(f"pgqd_log_{yesterday:%Y%m%d}", 0) == 0
    assert f"pgqd_log_{day_start(now):%Y%m%d}" in read
    assert sum(rows for rows in read.values()) <= 302


async def test_the_chart_counts_settled_minutes_from_the_rollup_and_reads_only_the_last_minutes_rows(
    conn: Any, upkeep: LogPartitionUpkeep
) -> None:
    now = await server_now(conn)
    hour_ago = now.replace(second=0, microsecond=0) - timedelta(hours=1)
    for day in {day_start(hour_ago), day_start(now)}:  # the hour may begin yesterday
        await conn.fetchval("SELECT pgqd_log_add_partition($1, $2)", day, day + timedelta(days=1)) if not any(
            r["lower_bound"] <= day < r["upper_bound"] for r in await conn.fetch(PARTITIONS)
        ) else None
    await conn.execute("UPDATE pgqd_log_minutes_rolled SET rolled_from = $1, rolled_until = $1", hour_ago)
    await conn.execute(INSERT_ROWS, 0, [now - timedelta(seconds=s / 4) for s in range(1, 4 * 3600 - 4)])
    stats = render(THROUGHPUT_SERIES, NAMES)

    async def settled_buckets() -> list[tuple[Any, ...]]:  # those that stay put while the test runs
        rows = await conn.fetch(stats, 3600.0, 60.0, None)
        return [tuple(r) for r in rows if hour_ago + timedelta(minutes=2) < r[0] < now - timedelta(minutes=2)]

    before = await settled_buckets()
    assert len(before) > 50

    await upkeep.step()
    rolled_until = await conn.fetchval("SELECT rolled_until FROM pgqd_log_minutes_rolled")
    assert rolled_until >= now - timedelta(seconds=120)
    assert await conn.fetchval("SELECT sum(succeeded) FROM pgqd_log_minutes") > 13_000
    assert await settled_buckets() == before  # the same figures
    plan = await conn.fetchval(
        "EXPLAIN (ANALYZE, FORMAT JSON) "
        + stats.replace("$1", "3600::float8").replace("$2", "60::float8").replace("$3", "NULL")
    )
    read = relations_read(json.loads(plan)[0]["Plan"])
    log_rows = sum(n for name, n in read.items() if not name.startswith("pgqd_log_minutes"))
    assert log_rows <= 4 * 130  # the rows of the last two minutes or so, not the hour's 14,000


async def test_a_search_over_one_finishing_day_returns_that_days_jobs_only(conn: Any) -> None:
    now = await server_now(conn)
    yesterday = day_start(now) - timedelta(days=1)
    await conn.fetchval("SELECT pgqd_log_add_partition($1, $2)", yesterday, yesterday + timedelta(days=1))
    await conn.execute(INSERT_ROWS, 0, [yesterday + timedelta(hours=h) for h in range(24)])
    await conn.execute(INSERT_ROWS, 100, [now - timedelta(seconds=5)])
    page = await JobSearch(conn, NAMES).page(
        JobFilter(finished_from=yesterday, finished_until=yesterday + timedelta(days=1)), limit=100
    )
    assert sorted(r["id"] for r in page.rows) == list(range(1, 25))
    newer = await JobSearch(conn, NAMES).page(JobFilter(created_from=day_start(now)), limit=100)
    assert [r["id"] for r in newer.rows] == [101]


# --- the upgrade from the unpartitioned log ----------------------------------------------------------------------


async def install_previous_version(conn: Any) -> None:
    """The schema as the version before this one left it (every migration before the log's partitioning)."""
    every = migrations(NAMES)
    for migration in every[: [m.name for m in every].index(THIS_MIGRATION)]:
        for step in migration.steps:
            async with conn.transaction():
                await conn.execute(step)
        await conn.execute(
            "INSERT INTO pgqd_schema_version (version, name) VALUES ($1, $2)", migration.version, migration.name
        )


async def test_the_upgrade_keeps_every_log_row_while_writes_go_on_and_the_old_statements_keep_working(
    empty_dsn: str,
) -> None:
    conn = await asyncpg.connect(empty_dsn)
    writer = await asyncpg.connect(empty_dsn)
    try:
        await install_previous_version(conn)
        # Five days of history, mass-deleted in places and refilled, as a pruned log is.
        await conn.execute(
            "INSERT INTO pgqd_log (job_id, entrypoint, priority, status, attempts, created_at, finished_at) "
            "SELECT i, 'e', 0, 'successful', 1, now() - i * interval '4 seconds', now() - i * interval '4 seconds' "
            "FROM generate_series(1, 100000) AS i"
        )
        await conn.execute("DELETE FROM pgqd_log WHERE job_id % 7 = 0")

        written = 0
        stop = asyncio.Event()

        async def write_outcomes() -> None:  # as a daemon of the previous version does, all through the upgrade
            nonlocal written
            while not stop.is_set():
                await writer.execute(
                    "INSERT INTO pgqd_log (job_id, entrypoint, priority, status, attempts, created_at) "
                    "VALUES ($1, 'e', 0, 'successful', 1, now())",
                    1_000_000 + written,
                )
                written += 1
                await asyncio.sleep(0.002)

        writing = asyncio.create_task(write_outcomes())
        await asyncio.sleep(0.1)
        await apply_upgrade(conn, NAMES)
        await asyncio.sleep(0.1)
        stop.set()
        await writing  # not one write failed

        assert await installed_version(conn, NAMES) == latest_version()
        assert await conn.fetchval("SELECT count(*) FROM pgqd_log") == 100_000 - 100_000 // 7 + written
        parts = await conn.fetch("SELECT * FROM pgqd_log_partitions() ORDER BY lower_bound NULLS FIRST")
        legacy = next(p for p in parts if p["partition"] == "pgqd_log_legacy")
        others = [p["lower_bound"] for p in parts if p["partition"] not in ("pgqd_log_legacy", "pgqd_log_default")]
        assert legacy["upper_bound"] == min(others)  # everything before the upgrade, nothing after it
        assert await conn.fetchval("SELECT count(*) FROM pgqd_log_default") == 0
        # The old rows are found by id, and the previous version's row-by-row pruning still runs.
        states = await conn.fetch(render(JOB_STATES, NAMES), [1, 2, 99_999])
        assert sorted(r["id"] for r in states) == [1, 2, 99_999]
        assert await conn.execute(render(PREVIOUS_PRUNE_LOG, NAMES), 4 * 86400.0, 1000, "prune") == "DELETE 1000"

        # Once retention has passed the upgrade, the old table goes whole.
        keeper = LogPartitionUpkeep(empty_dsn, NAMES, retention=0.001)
        try:
            plan = await keeper.step()
        finally:
            keeper.close()
        assert plan is not None
        assert "pgqd_log_legacy" in [p.name for p in plan.drop]
        assert await conn.fetchval("SELECT to_regclass('pgqd_log_legacy')") is None
    finally:
        await writer.close()
        await conn.close()
