"""Installing, upgrading and removing the schema: idempotent, serialised, injection-proof, and leaving nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from pgqd import IdentifierError, SchemaVersionError
from pgqd.daemon.worker.log_rollup import LogRollup
from pgqd.identifiers import Names
from pgqd.schema import apply_upgrade, install, installed_version, plan_upgrade, require_current, uninstall
from pgqd.sql import latest_version, migrations
from tests.support.cli import run_pgqd
from tests.support.databases import libpq_environment

CATALOG_OBJECTS = """
SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = $1 AND c.relname LIKE $2 || '%'
UNION ALL
SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  WHERE n.nspname = $1 AND t.typname LIKE $2 || '%'
UNION ALL
SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname = $1 AND p.proname LIKE $2 || '%'
"""


async def pgqd_objects(conn: Any, schema: str = "public", prefix: str = "pgqd_") -> list[str]:
    rows = await conn.fetch(CATALOG_OBJECTS, schema, prefix.replace("_", r"\_"))
    return sorted(row["name"] for row in rows)


@pytest.fixture
async def empty(empty_dsn: str) -> Any:
    conn = await asyncpg.connect(empty_dsn)
    yield conn
    await conn.close()


async def test_install_creates_every_table_and_records_the_version(empty: Any) -> None:
    plan = await install(empty)
    assert [m.version for m in plan.pending] == list(range(1, latest_version() + 1))
    assert await installed_version(empty, Names()) == latest_version()
    objects = await pgqd_objects(empty)
    for table in ("pgqd_jobs", "pgqd_log", "pgqd_workers", "pgqd_entrypoint_limits", "pgqd_schema_version"):
        assert table in objects
    await require_current(empty, Names())


async def test_second_install_and_upgrade_do_nothing(empty: Any) -> None:
    await install(empty)
    again = await apply_upgrade(empty, Names())
    assert again.pending == []
    assert (await plan_upgrade(empty, Names())).pending == []


async def test_uninstall_leaves_no_pgqd_object_behind(empty: Any) -> None:
    before = await pgqd_objects(empty)
    await install(empty)
    assert len(await pgqd_objects(empty)) > len(before)
    await uninstall(empty, Names())
    assert await pgqd_objects(empty) == before == []
    assert await installed_version(empty, Names()) == 0


async def test_two_installs_with_other_schema_and_prefix_live_side_by_side(empty: Any) -> None:
    await install(empty)
    await install(empty, schema="queue_b", prefix="bq_")
    assert "bq_jobs" in await pgqd_objects(empty, "queue_b", "bq_")
    await uninstall(empty, Names("queue_b", "bq_"))
    assert await pgqd_objects(empty, "queue_b", "bq_") == []
    assert "pgqd_jobs" in await pgqd_objects(empty)


async def test_concurrent_installs_are_serialised_by_the_advisory_lock(empty_dsn: str) -> None:
    conns = [await asyncpg.connect(empty_dsn) for _ in range(3)]
    try:
        plans = await asyncio.gather(*(install(c) for c in conns))
        # Exactly one of them applied the migrations; the others found them applied.
        assert sorted(len(p.pending) for p in plans) == [0, 0, latest_version()]
    finally:
        for c in conns:
            await c.close()


async def test_require_current_names_the_command_to_run(empty: Any) -> None:
    with pytest.raises(SchemaVersionError, match="pgqd install"):
        await require_current(empty, Names())
    await install(empty)
    await empty.execute("DELETE FROM pgqd_schema_version WHERE version = $1", latest_version())
    await empty.execute("INSERT INTO pgqd_schema_version (version, name) VALUES (0, 'older')")
    if latest_version() > 1:
        with pytest.raises(SchemaVersionError, match="pgqd upgrade"):
            await require_current(empty, Names())
    await empty.execute("INSERT INTO pgqd_schema_version (version, name) VALUES (999, 'future')")
    with pytest.raises(SchemaVersionError, match="newer than this pgqd"):
        await require_current(empty, Names())


@pytest.mark.parametrize(
    ("schema", "prefix"),
    [
        ("public", 'x"; drop table t; --'),
        ("public", "Upper_"),
        ("public", "1starts_with_digit"),
        ("public", "has space"),
        ('pub"lic', "pgqd_"),
        ("public;drop", "pgqd_"),
        ("", "pgqd_"),
        ("public", "p" * 60),
    ],
)
def test_schema_and_prefix_must_be_plain_identifiers(schema: str, prefix: str) -> None:
    with pytest.raises(IdentifierError, match="not a plain identifier"):
        Names(schema, prefix)


def test_migrations_render_only_validated_names() -> None:
    rendered = migrations(Names("app_queue", "jq_"))[0].sql
    assert '"app_queue"."jq_jobs"' in rendered
    assert "{" not in rendered.replace("'{", "")


async def test_cli_dry_run_prints_the_ddl_and_changes_nothing(empty_dsn: str, empty: Any) -> None:
    result = run_pgqd("install", "--dry-run", "--dsn", empty_dsn)
    assert result.returncode == 0, result.stderr
    assert 'CREATE TABLE "public"."pgqd_jobs"' in result.stdout
    assert "CREATE FUNCTION" in result.stdout
    assert await pgqd_objects(empty) == []


async def test_cli_install_then_upgrade_reports_nothing_to_do(empty_dsn: str, empty: Any) -> None:
    first = run_pgqd("install", "--dsn", empty_dsn)
    assert first.returncode == 0, first.stderr
    assert "applied migration 0001_initial" in first.stdout
    second = run_pgqd("upgrade", "--dsn", empty_dsn)
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout
    dry = run_pgqd("upgrade", "--dry-run", "--dsn", empty_dsn)
    assert "nothing to do" in dry.stdout


async def test_cli_uninstall_dry_run_then_for_real(empty_dsn: str, empty: Any) -> None:
    assert run_pgqd("install", "--dsn", empty_dsn).returncode == 0
    dry = run_pgqd("uninstall", "--dry-run", "--dsn", empty_dsn)
    assert 'DROP TABLE IF EXISTS "public"."pgqd_jobs"' in dry.stdout
    assert "pgqd_jobs" in await pgqd_objects(empty)
    real = run_pgqd("uninstall", "--dsn", empty_dsn)
    assert real.returncode == 0, real.stderr
    assert await pgqd_objects(empty) == []


async def test_cli_reads_the_dsn_from_the_environment(empty_dsn: str, empty: Any) -> None:
    via_pgqd_dsn = run_pgqd("install", env={"PGQD_DSN": empty_dsn})
    assert via_pgqd_dsn.returncode == 0, via_pgqd_dsn.stderr
    via_libpq = run_pgqd("upgrade", env={**libpq_environment(empty_dsn), "PGQD_DSN": ""})
    assert via_libpq.returncode == 0, via_libpq.stderr
    assert "nothing to do" in via_libpq.stdout


def test_cli_refuses_an_injected_prefix_with_exit_status_2() -> None:
    result = run_pgqd("install", "--dry-run", "--prefix", 'x"; drop table t; --')
    assert result.returncode == 2
    assert "not a plain identifier" in result.stderr


def test_cli_upgrade_without_install_says_to_install(empty_dsn: str) -> None:
    result = run_pgqd("upgrade", "--dsn", empty_dsn)
    assert result.returncode == 1
    assert "run `pgqd install`" in result.stderr


def test_cli_unreachable_database_is_a_clear_error_without_the_password() -> None:
    result = run_pgqd("install", "--dsn", "postgresql://app:s3cret-pw@127.0.0.1:1/app", timeout=30)
    assert result.returncode == 1
    assert "could not connect" in result.stderr
    assert "s3cret-pw" not in result.stderr
    assert "app:***@127.0.0.1:1" in result.stderr


async def test_upgrading_to_15_leaves_the_hourly_rollup_counting_each_log_row_once(empty: Any, empty_dsn: str) -> None:
    # Version 14's rollup counted the current hour anew on each pass, and noted when; version 15's adds what settled
    # since the position noted. After the upgrade its first pass must add only what came after version 14's last.
    names = Names()
    for migration in migrations(names):
        if migration.version > 14:
            break
        for step in migration.steps:
            await empty.execute(step)
        await empty.execute(
            "INSERT INTO pgqd_schema_version (version, name) VALUES ($1, $2)", migration.version, migration.name
        )
    await empty.execute(
        "INSERT INTO pgqd_log (job_id, entrypoint, priority, status, attempts, created_at, started_at, finished_at)"
        " SELECT g, 'mail', 0, 'successful', 1, now() - g * interval '1 minute', now() - g * interval '1 minute',"
        " now() - g * interval '1 minute' + interval '1 second' FROM generate_series(1, 150) AS g"
    )
    # What version 14's lead worker left at its last pass, 10 minutes ago: every row finished by then, counted.
    last_pass = "now() - interval '10 minutes'"
    await empty.execute(
        "INSERT INTO pgqd_log_rollup (bucket_start, entrypoint, status, measure, class, jobs)"
        " SELECT date_trunc('hour', finished_at), entrypoint, status, 0, 0, count(*) FROM pgqd_log"
        f" WHERE finished_at < {last_pass} GROUP BY 1, 2, 3"
    )
    await empty.execute(f"INSERT INTO pgqd_log_rollup_state (id, rolled_at) VALUES (true, {last_pass})")
    await apply_upgrade(empty, names)
    assert await installed_version(empty, names) == latest_version()

    await LogRollup(empty_dsn, names, settle=timedelta(0)).step()
    by_hour = "SELECT date_trunc('hour', finished_at), count(*) FROM pgqd_log GROUP BY 1 ORDER BY 1"
    counted = "SELECT bucket_start, jobs FROM pgqd_log_rollup WHERE measure = 0 ORDER BY 1"
    assert [tuple(r) for r in await empty.fetch(counted)] == [tuple(r) for r in await empty.fetch(by_hour)]
