"""Opening the database connection a command works on, with errors that say what to fix."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from pgqd.backend.bounded import DatabaseTimeouts, is_transient, tune_socket
from pgqd.backend.statement_bounds import SHORTEST, StatementBounds, no_answer, timed_out
from pgqd.config.load import load_config
from pgqd.config.model import Config
from pgqd.daemon.embedded import running_dsn
from pgqd.dsn import mask_dsn
from pgqd.errors import BackendUnavailable, ConfigError, PgqdError
from pgqd.identifiers import Names
from pgqd.ops.stats import READ_SIDE_SETTINGS
from pgqd.units import format_duration, parse_duration

DSN_HELP = "database to use (default: $PGQD_DSN, else the libpq PG* environment variables)"
# How long a command waits for each answer of the database. A command run by hand or from a script must not hang
# without a word when a lock held elsewhere, an overloaded server or a dead link keeps the answer from coming.
DB_TIMEOUT = 30.0
DB_TIMEOUT_HINT = " --db-timeout sets the wait (0: no limit)."
# How long a goodbye is waited for: a server that did not answer the command may not answer that either.
_CLOSE_WAIT = 2.0


def db_timeout_argument(text: str) -> float:
    """--db-timeout: a duration ("30s", "5m"), or 0 for no limit."""
    if text.strip() == "0":
        return 0.0
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < SHORTEST:
        raise argparse.ArgumentTypeError(f"{text!r} is shorter than 1ms: give 1ms or more, or 0 for no limit")
    return seconds


def add_connection_arguments(parser: argparse.ArgumentParser, db_timeout: float | None = DB_TIMEOUT) -> None:
    """``db_timeout``: the command's default for --db-timeout (0: no limit; None: no such option, for a command
    whose connections follow the config's [database] timeouts)."""
    parser.add_argument("--dsn", help=DSN_HELP)
    parser.add_argument("--config", "-c", help="take the database, schema and prefix from this config file")
    parser.add_argument("--schema", help="schema of the pgqd tables (default: public)")
    parser.add_argument("--prefix", help="name prefix of the pgqd tables (default: pgqd_)")
    if db_timeout is None:
        return
    default = format_duration(db_timeout) if db_timeout else "0, no limit"
    parser.add_argument(
        "--db-timeout",
        type=db_timeout_argument,
        default=db_timeout,
        metavar="DURATION",
        help=f"longest wait for each answer of the database, e.g. 10s, 5m; 0 for no limit (default: {default})",
    )


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


def command_connection(args: argparse.Namespace) -> contextlib.AbstractAsyncContextManager[Any]:
    """The connection of a command, to the database and with the --db-timeout its arguments give."""
    return connection(resolve_dsn(args), db_timeout=args.db_timeout, hint=DB_TIMEOUT_HINT)


@contextlib.asynccontextmanager
async def connection(
    dsn: str | None, connect_timeout: float = 10.0, db_timeout: float = DB_TIMEOUT, hint: str = ""
) -> AsyncIterator[Any]:
    """A connection to ``dsn`` opened within ``connect_timeout`` seconds, on which every statement is answered
    within ``db_timeout`` seconds (0: no limit) or fails with an error that says so, followed by ``hint``. The
    database's other errors end the command with their message too, not with a traceback."""
    bounds = StatementBounds(db_timeout)
    try:
        conn = await asyncpg.connect(
            dsn,
            timeout=connect_timeout,
            server_settings={"application_name": "pgqd-cli", **READ_SIDE_SETTINGS, **bounds.server_settings},
            command_timeout=bounds.client_timeout,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        message = mask_dsn(str(exc)) or type(exc).__name__
        text = f"could not connect to {describe(dsn)}: {message}"
        if is_transient(exc):
            raise BackendUnavailable(text) from None
        # A wrong password, a missing database or role, a malformed DSN: waiting will not fix these.
        raise PgqdError(text) from None
    if db_timeout:
        tune_socket(conn, DatabaseTimeouts(command=db_timeout))  # a link that went dead ends within the bound too
    try:
        yield conn
    except Exception as exc:
        if db_timeout and timed_out(exc):
            raise BackendUnavailable(no_answer(exc, db_timeout, describe(dsn)) + hint) from None
        if isinstance(exc, PgqdError):
            raise
        if is_transient(exc):
            raise BackendUnavailable(f"database unavailable ({describe(dsn)}): {_said(exc)}") from None
        if isinstance(exc, asyncpg.UndefinedTableError):
            raise PgqdError(
                f"{_said(exc)} ({describe(dsn)}): pgqd is not installed there, or under another schema or prefix"
                " (--schema, --prefix): `pgqd install` installs it"
            ) from None
        if isinstance(exc, asyncpg.PostgresError):
            raise PgqdError(f"the database refused ({describe(dsn)}): {_said(exc)}") from None
        raise
    finally:
        try:
            await conn.close(timeout=_CLOSE_WAIT)
        except Exception:  # a server that does not answer the goodbye either
            conn.terminate()


def _said(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
