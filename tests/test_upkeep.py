"""The lead worker's vacuum of the jobs table: it runs once claimed jobs have left enough dead rows, not before,
however deep the backlog, at most a share of the time, never when the role may not vacuum the table, and a
daemon's lead worker runs it unless it is turned off."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from pgqd.config.load import parse_config
from pgqd.daemon.supervisor.runtime import worker_plan
from pgqd.daemon.worker.vacuum import MAX_TIME_SHARE, MIN_DEAD_ROWS, JobsTableUpkeep
from pgqd.identifiers import Names
from tests.support.daemon import StartDaemon, daemon_config
from tests.support.waiting import wait_until

HANDLER = '[entrypoints.a]\nhandler = "tests.support.daemon_app:sleeper"\n'
DEAD_ROWS = "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'pgqd_jobs'"
VACUUMS = "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'pgqd_jobs'"


async def leave_dead_rows(conn: Any, count: int, keep_live: bool = False) -> None:
    """Jobs inserted and deleted, as finished jobs are (with ``keep_live``, only those); waits until the
    statistics count their dead rows."""
    before = int(await conn.fetchval(DEAD_ROWS) or 0)
    ids = await conn.fetchval(
        "WITH new AS (INSERT INTO pgqd_jobs (entrypoint) SELECT 'a' FROM generate_series(1, $1) RETURNING id) "
        "SELECT array_agg(id) FROM new",
        count,
    )
    await conn.execute("DELETE FROM pgqd_jobs WHERE $1 OR id = ANY($2::bigint[])", not keep_live, ids)
    await conn.execute("SELECT pg_stat_force_next_flush()")

    async def counted() -> bool:
        return int(await conn.fetchval(DEAD_ROWS)) >= before + count

    await wait_until(counted, timeout=10, what="the dead rows counted")


async def test_it_vacuums_once_dead_rows_reach_the_threshold_and_not_before(conn: Any, db_dsn: str) -> None:
    upkeep = JobsTableUpkeep(db_dsn, Names(), min_dead_rows=2_000)
    try:
        await leave_dead_rows(conn, 1_500)
        assert await upkeep.check()
        assert (upkeep.vacuums, await conn.fetchval(VACUUMS)) == (0, 0)
        await leave_dead_rows(conn, 1_000)  # 2,500 in all
        assert await upkeep.check()
        assert upkeep.vacuums == 1

        async def vacuumed() -> bool:
            return int(await conn.fetchval(VACUUMS)) == 1 and int(await conn.fetchval(DEAD_ROWS)) == 0

        await wait_until(vacuumed, timeout=10, what="the vacuum in the statistics")
    finally:
        upkeep.close()


async def test_the_vacuum_keeps_the_empty_end_of_the_table_rather_than_lock_it_to_cut_it_off(
    conn: Any, db_dsn: str
) -> None:
    # Cutting the empty end off takes an exclusive lock that stops every claim, and the table fills up again.
    upkeep = JobsTableUpkeep(db_dsn, Names(), min_dead_rows=2_000)
    try:
        await leave_dead_rows(conn, 5_000)
        size = await conn.fetchval("SELECT pg_relation_size('pgqd_jobs')")
        assert size > 0
        assert await upkeep.check()
        assert upkeep.vacuums == 1
        assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs") == 0
        assert await conn.fetchval("SELECT pg_relation_size('pgqd_jobs')") == size
    finally:
        upkeep.close()


async def test_a_deep_backlog_does_not_put_the_vacuum_off(conn: Any, db_dsn: str) -> None:
    # Ten times as many live jobs as the threshold: a threshold that grew with the live rows never came.
    await conn.execute("INSERT INTO pgqd_jobs (entrypoint) SELECT 'a' FROM generate_series(1, 20000)")
    upkeep = JobsTableUpkeep(db_dsn, Names(), min_dead_rows=2_000)
    try:
        await leave_dead_rows(conn, 2_500, keep_live=True)
        assert await upkeep.check()
        assert upkeep.vacuums == 1
        assert await conn.fetchval("SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = 'pgqd_jobs'") >= 20_000
    finally:
        upkeep.close()


class SteppingClock:
    """A clock that moves on a second each time it is read: a vacuum between two readings takes one second."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


async def test_vacuums_take_at_most_their_share_of_the_time(conn: Any, db_dsn: str) -> None:
    upkeep = JobsTableUpkeep(db_dsn, Names(), min_dead_rows=2_000, clock=SteppingClock())
    try:
        await leave_dead_rows(conn, 2_500)
        assert await upkeep.check()
        assert upkeep.vacuums == 1  # it took a second by that clock, from 2 to 3
        await leave_dead_rows(conn, 2_500)
        checks_put_off = 0
        while upkeep.vacuums == 1 and checks_put_off < 20:
            assert await upkeep.check()
            checks_put_off += upkeep.vacuums == 1
        # One check a second: the next vacuum starts at 2 + 1 / MAX_TIME_SHARE, not before.
        assert upkeep.vacuums == 2
        assert checks_put_off == round(1 / MAX_TIME_SHARE) - 2
    finally:
        upkeep.close()


async def test_dead_rows_an_older_transaction_keeps_do_not_set_off_vacuum_after_vacuum(conn: Any, db_dsn: str) -> None:
    # A clock that stands still: each vacuum takes no time by it, so the time share (the test above) never puts
    # the next one off, and only the dead rows decide. (By the wall clock, a first vacuum of 50 ms on a busy
    # machine put the second off by half a second.)
    upkeep = JobsTableUpkeep(db_dsn, Names(), min_dead_rows=2_000, clock=lambda: 0.0)
    reader = await asyncpg.connect(db_dsn)
    try:
        snapshot = reader.transaction(isolation="repeatable_read")
        await snapshot.start()
        await reader.fetchval("SELECT count(*) FROM pgqd_jobs")  # its snapshot is taken: it may see the rows
        await leave_dead_rows(conn, 2_500)
        assert await upkeep.check()
        assert upkeep.vacuums == 1
        assert upkeep.dead_left >= 2_500  # none could be removed
        for _ in range(3):
            assert await upkeep.check()
        assert upkeep.vacuums == 1
        await snapshot.rollback()
        await leave_dead_rows(conn, 2_000)  # as many again since that vacuum: now they all go
        assert await upkeep.check()
        assert (upkeep.vacuums, upkeep.dead_left) == (2, 0)
    finally:
        upkeep.close()
        await reader.close()


@pytest.fixture
async def other_role(pg_server: str) -> AsyncIterator[str]:
    role = f"pgqd_not_owner_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        yield role
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_it_stops_without_vacuuming_when_the_role_does_not_own_the_table(
    conn: Any, db_dsn: str, other_role: str
) -> None:
    await leave_dead_rows(conn, 500)
    dsn = urlsplit(db_dsn)._replace(netloc=f"{other_role}@{urlsplit(db_dsn).netloc.rpartition('@')[2]}").geturl()
    upkeep = JobsTableUpkeep(dsn, Names(), min_dead_rows=100)
    try:
        assert await upkeep.check() is False
        assert upkeep.vacuums == 0
    finally:
        upkeep.close()
    assert await conn.fetchval(VACUUMS) == 0


async def test_an_unreachable_database_is_retried_not_fatal() -> None:
    upkeep = JobsTableUpkeep("postgresql://127.0.0.1:9/none", Names(), min_dead_rows=1)
    assert await upkeep.check() is True
    assert upkeep.vacuums == 0


def test_only_the_lead_worker_vacuums_and_the_config_can_turn_it_off() -> None:
    config = parse_config(HANDLER)
    handlers = {"a": print}
    plans = [worker_plan(config, handlers, None, 0, None, lead=lead, queue_gauges=False) for lead in (True, False)]
    assert [plan.upkeep for plan in plans] == [True, False]
    off = parse_config("[database]\nvacuum_jobs = false\n" + HANDLER)
    assert worker_plan(off, handlers, None, 0, None, lead=True, queue_gauges=False).upkeep is False


async def test_a_running_daemon_vacuums_the_jobs_table_once_claimed_jobs_leave_many_dead_rows(
    conn: Any, start_daemon: StartDaemon
) -> None:
    start_daemon(daemon_config(processes=2)).wait_ready()
    # Not waiting for the count: the daemon may vacuum as soon as the statistics show it.
    await conn.execute("INSERT INTO pgqd_jobs (entrypoint) SELECT 'a' FROM generate_series(1, $1)", MIN_DEAD_ROWS)
    await conn.execute("DELETE FROM pgqd_jobs")

    async def vacuumed() -> bool:
        return int(await conn.fetchval(VACUUMS)) >= 1

    await wait_until(vacuumed, timeout=30, what="the lead worker's vacuum")
    assert int(await conn.fetchval(DEAD_ROWS)) < MIN_DEAD_ROWS
