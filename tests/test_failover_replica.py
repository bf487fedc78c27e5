"""A real failover: the primary of a streaming pair crashes and its hot standby is promoted.

Each test builds a private primary and standby (tests/support/replication.py), never the shared server. The
long form of the drill, with more load and the figures, is benchmarks/failover_replica.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import psycopg2
import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import create_async_engine

from pgqd import Client, ReadOnlyDatabase, SyncClient, install
from tests.support.cli import run_pgqd
from tests.support.daemon import Daemon, daemon_config, wait_for
from tests.support.daemon_app import CREATE_RUNS
from tests.support.failover_drill import WORKFLOW_KEYS, DrillResult, DrillSettings, run_drill
from tests.support.replication import ReplicatedPair, server_binaries
from tests.support.web import WebServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(server_binaries() is None, reason="needs the PostgreSQL server programs (initdb, pg_ctl)"),
]

SHORT = {"load_before": 2.0, "down_for": 1.0, "load_after": 2.0}


def assert_the_daemon_followed_the_new_primary(result: DrillResult) -> None:
    # The same worker processes: nothing was restarted, by hand or by the supervisor.
    assert result.worker_pids_after == result.worker_pids_before
    assert result.resumed_after_promotion is not None
    assert result.resumed_after_promotion < 10
    # The poll interval is 20 s: a job started this fast was woken by the NOTIFY on the re-opened LISTEN.
    assert result.wake_after_failover is not None
    assert result.wake_after_failover < 3


async def test_a_synchronous_failover_loses_no_acknowledged_job_outcome_or_effect(tmp_path: Path) -> None:
    result = await run_drill(DrillSettings(synchronous=True, **SHORT), tmp_path)

    assert result.acknowledged_enqueues > 100, result
    assert result.outcomes_seen_before_crash > 50, result
    assert result.lost_enqueues == []
    assert result.lost_outcomes == []
    assert result.effects_missing == []
    # The workflow in flight at the crash completed, no step before its parents.
    assert result.workflow_statuses == dict.fromkeys(WORKFLOW_KEYS, "successful")
    assert result.workflow_left == 0
    assert result.workflow_started_early == []
    assert result.ids_handed_out_twice == []
    # Afterwards every job ended exactly once, all successful, and no schedule tick got two jobs.
    assert result.jobs_left == 0
    assert result.jobs_logged_twice == []
    assert set(result.final_statuses) == {"successful"}
    assert result.ticks_fired_twice == []
    assert_the_daemon_followed_the_new_primary(result)
    assert result.daemon_warnings.get("database reachable again", 0) >= 1


async def test_an_asynchronous_failover_loses_what_the_standby_lacked_and_pgqd_carries_on(tmp_path: Path) -> None:
    # The standby's link hangs for a second before the crash: it lacks the last second of commits.
    result = await run_drill(DrillSettings(synchronous=False, replication_held=1.0, **SHORT), tmp_path)

    assert result.standby_lag_bytes_at_crash
    assert result.standby_lag_bytes_at_crash > 0
    assert result.lost_enqueues, "jobs acknowledged in the last second should be gone with the old primary"
    assert result.workflow_left == 0  # the workflow ended (or was lost whole): no step waits forever
    # pgqd itself stays whole on what survived: nothing stuck, nothing logged twice, the same processes.
    assert result.jobs_left == 0
    assert result.jobs_logged_twice == []
    assert_the_daemon_followed_the_new_primary(result)


@pytest.fixture
def pair() -> Iterator[ReplicatedPair]:
    with ReplicatedPair(synchronous=False) as started:
        yield started


async def _installed(pair: ReplicatedPair) -> str:
    dsn = await pair.create_database("app")
    conn = await asyncpg.connect(dsn)
    try:
        await install(conn)
        await conn.execute(CREATE_RUNS)
    finally:
        await conn.close()
    await pair.wait_replayed()
    return dsn


async def test_a_daemon_pointed_at_a_standby_says_so_and_starts_working_once_it_is_promoted(
    pair: ReplicatedPair, tmp_path: Path
) -> None:
    await _installed(pair)
    config = tmp_path / "queue.toml"
    config.write_text(daemon_config(processes=1))
    daemon = Daemon(config, pair.standby.dsn("app")).start()
    try:
        daemon.wait_ready()
        worker = daemon.worker_pids()

        def read_only_reported() -> list[Any]:
            return [e for e in daemon.events() if "target_session_attrs" in str(e.get("error"))]

        line = wait_for(read_only_reported, 20, "the daemon to report the read-only server")[0]
        assert "read-only" in str(line["error"]), line
        # No crash loop: the worker waits for the database, and stays the same process.
        await asyncio.sleep(3)
        assert daemon.process is not None
        assert daemon.process.poll() is None, daemon.log_text()
        assert daemon.worker_pids() == worker
        assert not [e for e in daemon.events() if e.get("event") in ("worker exited", "worker process failed")]

        pair.crash_primary()
        pair.promote()
        producer = await asyncpg.connect(pair.standby.dsn("app"))
        try:
            job_id = await Client(producer).enqueue("sleeper", "0")
            assert job_id is not None
            state = await Client(producer).wait(job_id, timeout=30)
            assert state.status == "successful"
        finally:
            await producer.close()
        assert daemon.worker_pids() == worker
    finally:
        daemon.stop()


async def test_producers_and_pgqd_web_on_a_standby_get_a_read_only_error_that_names_the_fix(
    pair: ReplicatedPair, tmp_path: Path
) -> None:
    await _installed(pair)
    standby = pair.standby.dsn("app")
    conn = await asyncpg.connect(standby)
    try:
        with pytest.raises(ReadOnlyDatabase, match="target_session_attrs=read-write"):
            await Client(conn).enqueue("sleeper", "0")
    finally:
        await conn.close()
    with SyncClient(standby) as client, pytest.raises(ReadOnlyDatabase, match="standby"):
        client.enqueue("sleeper", "0")

    config = tmp_path / "web.toml"
    config.write_text(daemon_config())
    web = WebServer(config, standby).start()
    try:
        assert web.get("/").status == 200  # the read pages work on a standby
        paused = web.post_form("/entrypoints/pause", {"entrypoint": "sleeper"})
        assert paused.status == 503
        assert "target_session_attrs=read-write" in paused.text
    finally:
        web.stop()


def _sqlalchemy_url(pair: ReplicatedPair, driver: str) -> str:
    """SQLAlchemy spells several hosts as repeated ``host`` query parameters."""
    hosts = f"host=127.0.0.1:{pair.primary.port}&host=127.0.0.1:{pair.standby.port}"
    return f"postgresql+{driver}://postgres@/app?{hosts}&target_session_attrs=read-write"


async def test_producers_of_every_driver_and_pgqd_web_follow_a_multi_host_dsn_to_the_new_primary(
    pair: ReplicatedPair, tmp_path: Path
) -> None:
    dsn = await _installed(pair)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    psycopg_conn = psycopg.connect(dsn, autocommit=True)
    sync_engine = sqlalchemy.create_engine(_sqlalchemy_url(pair, "psycopg"))
    async_engine = create_async_engine(_sqlalchemy_url(pair, "asyncpg"))
    config = tmp_path / "web.toml"
    config.write_text(daemon_config())
    web = WebServer(config, dsn).start()
    try:
        before = await Client(pool).enqueue("sleeper", "before")
        assert web.get("/").status == 200

        pair.crash_primary()
        pair.promote()

        enqueued: dict[str, Any] = {}
        # Each producer's first call after the crash may fail (its connection died with the server); the next
        # one connects anew, and the multi-host DSN takes it to the new primary.
        for label, enqueue in {
            "asyncpg pool": lambda: Client(pool).enqueue("sleeper", "asyncpg"),
            "SyncClient(DSN), psycopg 3": lambda: SyncClient(dsn).enqueue("sleeper", "dsn"),
            "psycopg 3 connection": lambda: _fresh(psycopg_conn, dsn, "psycopg"),
            "psycopg2 connection": lambda: _with_psycopg2(dsn),
            "SQLAlchemy psycopg": lambda: _with_engine(sync_engine),
            "SQLAlchemy asyncpg": lambda: _with_async_engine(async_engine),
        }.items():
            enqueued[label] = await _retry(enqueue)
        new_primary = await asyncpg.connect(pair.standby.dsn("app"))
        try:
            found = await new_primary.fetchval(
                "SELECT count(*) FROM pgqd_jobs WHERE id = ANY ($1::bigint[])", [before, *enqueued.values()]
            )
        finally:
            await new_primary.close()
        assert found == 1 + len(enqueued), enqueued

        def page_answers() -> bool:
            return web.get("/").status == 200

        wait_for(page_answers, 20, "pgqd web to answer from the new primary")
    finally:
        web.stop()
        await pool.close()
        psycopg_conn.close()
        sync_engine.dispose()
        await async_engine.dispose()


async def _retry(call: Any, attempts: int = 20) -> Any:
    for attempt in range(attempts):
        try:
            result = call()
            return await result if asyncio.iscoroutine(result) else result
        except Exception:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.25)
    return None


def _fresh(conn: psycopg.Connection[Any], dsn: str, payload: str) -> int | None:
    """A psycopg connection that broke is replaced, as an application's pool would."""
    if conn.broken or conn.closed:
        conn = psycopg.connect(dsn, autocommit=True)
    try:
        return SyncClient(conn).enqueue("sleeper", payload)
    except Exception:
        with contextlib.suppress(Exception):
            conn.close()
        raise


def _with_psycopg2(dsn: str) -> int | None:
    conn = psycopg2.connect(dsn)
    try:
        with conn:
            return SyncClient(conn).enqueue("sleeper", "psycopg2")
    finally:
        conn.close()


def _with_engine(engine: sqlalchemy.Engine) -> int | None:
    with engine.begin() as connection:
        return SyncClient(connection).enqueue("sleeper", "sqlalchemy")


async def _with_async_engine(engine: Any) -> int | None:
    async with engine.begin() as connection:
        return await Client(connection).enqueue("sleeper", "sqlalchemy-async")


async def test_pgqd_web_and_dashboard_read_from_a_replica_and_changes_go_to_the_primary(
    pair: ReplicatedPair, tmp_path: Path
) -> None:
    await _installed(pair)
    primary = await asyncpg.connect(pair.primary.dsn("app"))
    config = tmp_path / "web.toml"
    config.write_text(daemon_config())
    web = WebServer(config, pair.primary.dsn("app"), args=["--read-dsn", pair.standby.dsn("app")]).start()
    try:
        job_id = await Client(primary).enqueue("sleeper", "on the primary")
        await pair.wait_replayed()
        assert web.get(f"/jobs/{job_id}").status == 200
        readers = await _web_connections(pair.standby.dsn("app"))
        assert readers >= 1, "the read pages should have used the replica"

        paused = web.post_form("/entrypoints/pause", {"entrypoint": "sleeper"})
        assert paused.status == 303, paused.text
        assert (await Client(primary).paused()).is_paused("sleeper")
    finally:
        web.stop()
        await primary.close()

    # The terminal dashboard only reads, so it runs on a replica as it is.
    await pair.wait_replayed()
    snapshot = await asyncio.to_thread(run_pgqd, "dashboard", "--dsn", pair.standby.dsn("app"), "--once", "--json")
    assert snapshot.returncode == 0, snapshot.stderr
    assert "sleeper" in snapshot.stdout


async def _web_connections(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgqd-web' AND datname = 'app'"
        )
        return count
    finally:
        await conn.close()
