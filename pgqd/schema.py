"""Installing, upgrading, checking and removing the pgqd schema in a database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgqd.errors import SchemaVersionError
from pgqd.identifiers import Names
from pgqd.sql import Migration, latest_version, migrations, uninstall_sql


@dataclass(frozen=True)
class UpgradePlan:
    installed: int
    pending: list[Migration]

    @property
    def target(self) -> int:
        return self.pending[-1].version if self.pending else self.installed


async def installed_version(conn: Any, names: Names) -> int:
    """The schema version recorded in the database; 0 when pgqd is not installed there."""
    if await conn.fetchval("SELECT to_regclass($1)", names.table("schema_version")) is None:
        return 0
    version: int | None = await conn.fetchval(f"SELECT max(version) FROM {names.table('schema_version')}")
    return version or 0


async def plan_upgrade(conn: Any, names: Names) -> UpgradePlan:
    installed = await installed_version(conn, names)
    every = migrations(names)
    if installed > len(every):
        raise SchemaVersionError(
            f"the database schema {names.schema!r} (prefix {names.prefix!r}) is at version {installed}, newer than "
            f"this pgqd knows ({len(every)}): upgrade pgqd"
        )
    return UpgradePlan(installed, every[installed:])


async def apply_upgrade(conn: Any, names: Names) -> UpgradePlan:
    """Applies every pending migration, serialised against other installers by a lock held throughout.

    Each migration commits with its version row, so a failure leaves the schema at the last version that
    applied whole. A migration may commit in steps (see ``Migration.steps``); its version is recorded with the
    last one.
    """
    await conn.execute("SELECT pg_advisory_lock(hashtext($1))", names.lock_key)
    try:
        plan = await plan_upgrade(conn, names)
        for migration in plan.pending:
            *first_steps, last_step = migration.steps
            for step in first_steps:
                async with conn.transaction():
                    await conn.execute(step)
            async with conn.transaction():
                await conn.execute(last_step)
                await conn.execute(
                    f"INSERT INTO {names.table('schema_version')} (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", names.lock_key)
    return plan


async def uninstall(conn: Any, names: Names) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", names.lock_key)
        await conn.execute(uninstall_sql(names))


async def require_current(conn: Any, names: Names, *, allow_newer: bool = False) -> int:
    """Raises a SchemaVersionError that says which command to run unless the schema is current; returns the
    installed version.

    With ``allow_newer`` a schema ahead of this code is accepted: migrations only ever add (tables, columns
    with defaults, functions), so code of the previous version keeps working while a rolling upgrade replaces
    it. This is what lets ``pgqd upgrade`` run before the new daemons roll out.
    """
    installed = await installed_version(conn, names)
    latest = latest_version()
    where = f"schema {names.schema!r} with prefix {names.prefix!r}"
    if installed == 0:
        raise SchemaVersionError(f"pgqd is not installed in {where}: run `pgqd install`")
    if installed < latest:
        raise SchemaVersionError(
            f"the pgqd tables in {where} are at version {installed}, this pgqd needs {latest}: run `pgqd upgrade`"
        )
    if installed > latest and not allow_newer:
        raise SchemaVersionError(
            f"the pgqd tables in {where} are at version {installed}, newer than this pgqd ({latest}): "
            "upgrade the pgqd package"
        )
    return installed


async def install(conn: Any, *, schema: str = "public", prefix: str = "pgqd_") -> UpgradePlan:
    """Creates or upgrades the pgqd tables on an asyncpg connection (what ``pgqd install`` does)."""
    return await apply_upgrade(conn, Names(schema, prefix))
