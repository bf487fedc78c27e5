"""SQLAlchemy 2: connections, sessions (plain or scoped) and engines, blocking and asynchronous.

Every statement goes through SQLAlchemy's own connection (``exec_driver_sql``), never straight to the driver
connection underneath: a session begins its transaction lazily, and SQLAlchemy's asyncpg adapter opens the
driver's transaction only for statements it runs itself, so a statement sent beside it could commit on its
own. Through the session's connection it is part of the session's transaction and commits or rolls back with
it. An engine lends a connection for one call, in a transaction committed when the call ends.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection as SaConnection
from sqlalchemy.engine import Dialect
from sqlalchemy.engine import Engine as SaEngine
from sqlalchemy.ext.asyncio import AsyncConnection as SaAsyncConnection
from sqlalchemy.ext.asyncio import AsyncEngine as SaAsyncEngine

from pgqd.backend.operations import Rows
from pgqd.errors import PgqdError
from pgqd.producers.placeholders import bind


def _paramstyle(dialect: Dialect) -> str:
    if dialect.name != "postgresql":
        raise PgqdError(f"pgqd needs PostgreSQL, and this SQLAlchemy target speaks {dialect.name}")
    # psycopg takes binary parameters through the same connection (see pgqd.producers.drivers.via_psycopg).
    return "psycopg_binary" if dialect.driver == "psycopg" else dialect.paramstyle


def fetch_on(conn: SaConnection, sql: str, args: tuple[Any, ...]) -> Rows:
    text, params = bind(sql, args, _paramstyle(conn.dialect))
    return conn.exec_driver_sql(text, params).fetchall()


async def fetch_on_async(conn: SaAsyncConnection, sql: str, args: tuple[Any, ...]) -> Rows:
    text, params = bind(sql, args, _paramstyle(conn.dialect))
    result = await conn.exec_driver_sql(text, params)
    return result.fetchall()


class Connection:
    def __init__(self, conn: SaConnection) -> None:
        self._conn = conn

    def fetch(self, sql: str, args: tuple[Any, ...]) -> Rows:
        return fetch_on(self._conn, sql, args)

    def close(self) -> None:
        """The connection is the caller's to close."""


class Session:
    """A ``Session`` or a ``scoped_session`` (which hands out the current thread's session)."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def fetch(self, sql: str, args: tuple[Any, ...]) -> Rows:
        return fetch_on(self._session.connection(), sql, args)

    def close(self) -> None:
        """The session is the caller's to close."""


class Engine:
    def __init__(self, engine: SaEngine) -> None:
        self._engine = engine

    def fetch(self, sql: str, args: tuple[Any, ...]) -> Rows:
        with self._engine.begin() as conn:
            return fetch_on(conn, sql, args)

    def close(self) -> None:
        """The engine is the caller's to dispose of."""


class AsyncConnection:
    def __init__(self, conn: SaAsyncConnection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, args: tuple[Any, ...]) -> Rows:
        return await fetch_on_async(self._conn, sql, args)

    async def close(self) -> None:
        """The connection is the caller's to close."""


class AsyncSession:
    """An ``AsyncSession`` or an ``async_scoped_session``."""

    def __init__(self, session: Any) -> None:
        self._session = session

    async def fetch(self, sql: str, args: tuple[Any, ...]) -> Rows:
        return await fetch_on_async(await self._session.connection(), sql, args)

    async def close(self) -> None:
        """The session is the caller's to close."""


class AsyncEngine:
    def __init__(self, engine: SaAsyncEngine) -> None:
        self._engine = engine

    async def fetch(self, sql: str, args: tuple[Any, ...]) -> Rows:
        async with self._engine.begin() as conn:
            return await fetch_on_async(conn, sql, args)

    async def close(self) -> None:
        """The engine is the caller's to dispose of."""
