"""Opening the database connection a command works on, with errors that say what to fix."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from pgqd.backend.bounded import is_transient
from pgqd.config.load import load_config
from pgqd.config.model import Config
from pgqd.daemon.embedded import running_dsn
from pgqd.dsn import mask_dsn
from pgqd.errors import BackendUnavailable, ConfigError, PgqdError
from pgqd.identifiers import Names
from pgqd.ops.stats import READ_SIDE_SETTINGS

DSN_HELP = "database to use (default: $PGQD_DSN, else the libpq PG* environment variables)"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", help=DSN_HELP)
    parser.add_argument("--config", "-c", help="take the database, schema and prefix from this config file")
    parser.add_argument("--schema", help="schema of the pgqd tables (default: public)")
    parser.add_argument("--prefix", help="name prefix of the pgqd tables (default: pgqd_)")


def _config(args: argparse.Namespace) -> Config | None:
    return load_config(Path(args.config)) if getattr(args, "config", None) else None


def resolve_dsn(args: argparse.Namespace) -> str | None:
    """--dsn, else $PGQD_DSN, else the config's database (a running embedded server included), else None:
    asyncpg then reads PGHOST, PGUSER, PGDATABASE and the other libpq variables."""
    if args.dsn or os.environ.get("PGQD_DSN"):
        return str(args.dsn or os.environ["PGQD_DSN"])
    config = _config(args)
    if config is None:
        return None
    if config.database.embedded:
        pgdata = config.resolve_path(config.database.embedded)
        dsn = running_dsn(pgdata)
        if dsn is None:
            raise BackendUnavailable(f"the embedded PostgreSQL in {pgdata} is not running: start the daemon first")
        return dsn
    return config.database.dsn


def names_from(args: argparse.Namespace) -> Names:
    config = _config(args)
    schema = args.schema or (config.database.schema if config else "public")
    prefix = args.prefix if args.prefix is not None else (config.database.prefix if config else "pgqd_")
    try:
        return Names(schema, prefix)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def describe(dsn: str | None) -> str:
    if dsn:
        return mask_dsn(dsn)
    parts = [f"{var}={os.environ[var]}" for var in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE") if var in os.environ]
    return "the PG* environment (" + (", ".join(parts) or "libpq defaults") + ")"


@contextlib.asynccontextmanager
async def connection(dsn: str | None, timeout: float = 10.0) -> AsyncIterator[Any]:
    try:
        conn = await asyncpg.connect(
            dsn, timeout=timeout, server_settings={"application_name": "pgqd-cli", **READ_SIDE_SETTINGS}
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        message = mask_dsn(str(exc)) or type(exc).__name__
        text = f"could not connect to {describe(dsn)}: {message}"
        if is_transient(exc):
            raise BackendUnavailable(text) from None
        # A wrong password, a missing database or role, a malformed DSN: waiting will not fix these.
        raise PgqdError(text) from None
    try:
        yield conn
    finally:
        await conn.close()
