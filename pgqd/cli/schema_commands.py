"""``pgqd install``, ``pgqd upgrade`` and ``pgqd uninstall``."""

from __future__ import annotations

import argparse
from typing import Any

from pgqd import schema
from pgqd.cli.connect import DB_TIMEOUT, add_connection_arguments, command_connection, names_from
from pgqd.errors import SchemaVersionError
from pgqd.sql import uninstall_sql


def register(commands: Any) -> None:
    for name, handler, summary in (
        ("install", install, "create the pgqd tables, or bring them up to date"),
        ("upgrade", upgrade, "apply pending schema migrations"),
        ("uninstall", uninstall, "drop every pgqd table, type and function (and all jobs with them)"),
    ):
        parser = commands.add_parser(name, help=summary, description=summary)
        # Migrations may rewrite big tables, and an install waits for another one under way: no limit by default.
        # An uninstall drops the tables in one transaction; unbounded, its wait for their locks would hold up
        # every worker of the fleet behind it without a word.
        add_connection_arguments(parser, db_timeout=DB_TIMEOUT if name == "uninstall" else 0)
        parser.add_argument("--dry-run", action="store_true", help="print the SQL instead of running it")
        parser.set_defaults(handler=handler)


def _where(args: argparse.Namespace) -> str:
    names = names_from(args)
    return f"schema {names.schema!r}, prefix {names.prefix!r}"


async def _apply(args: argparse.Namespace, *, must_exist: bool) -> int:
    names = names_from(args)
    async with command_connection(args) as conn:
        plan = await schema.plan_upgrade(conn, names)
        if must_exist and plan.installed == 0:
            raise SchemaVersionError(f"pgqd is not installed ({_where(args)}): run `pgqd install`")
        if args.dry_run:
            if not plan.pending:
                print(f"-- pgqd is at version {plan.installed} ({_where(args)}); nothing to do")
            for migration in plan.pending:
                print(f"-- migration {migration.version:04d}_{migration.name}")
                print(migration.sql.strip())
                print()
            return 0
        applied = await schema.apply_upgrade(conn, names)
    if not applied.pending:
        print(f"pgqd is at version {applied.installed} ({_where(args)}); nothing to do")
        return 0
    for migration in applied.pending:
        print(f"applied migration {migration.version:04d}_{migration.name}")
    print(f"pgqd is now at version {applied.target} ({_where(args)})")
    return 0


async def install(args: argparse.Namespace) -> int:
    return await _apply(args, must_exist=False)


async def upgrade(args: argparse.Namespace) -> int:
    return await _apply(args, must_exist=True)


async def uninstall(args: argparse.Namespace) -> int:
    names = names_from(args)
    if args.dry_run:
        print(uninstall_sql(names).strip())
        return 0
    async with command_connection(args) as conn:
        version = await schema.installed_version(conn, names)
        await schema.uninstall(conn, names)
    if version == 0:
        print(f"pgqd was not installed ({_where(args)}); removed any leftovers")
    else:
        print(f"removed pgqd version {version} ({_where(args)})")
    return 0
