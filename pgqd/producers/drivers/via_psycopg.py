"""psycopg 3: connections and pools, blocking and asynchronous, and a connection of pgqd's own opened from a DSN.

The statement runs on the caller's connection, so it joins the transaction open there (or, outside one, begins
it as psycopg does, or commits at once in autocommit mode). A pool lends a connection for one call and
commits when it is given back.

Parameters and results travel in binary format: in text format psycopg escapes every element of an array
parameter in Python, which made a batch of 1,000 jobs cost 3.6 ms of client time instead of 0.7 ms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.conninfo
from psycopg.rows import tuple_row

from pgqd.backend.operations import Rows
from pgqd.producers.owned_bounds import with_default_bounds
from pgqd.producers.placeholders import bind

if TYPE_CHECKING:
    # Only for the annotations: a plain connection works without psycopg_pool installed.
    import psycopg_pool


def fetch_on(conn: psycopg.Connection[Any], sql: str, args: tuple[Any, ...]) -> Rows:
    text, params = bind(sql, args, "psycopg_binary")
    # A cursor of our own choosing, whatever cursor_factory and row_factory the connection has.
    with psycopg.Cursor(conn, row_factory=tuple_row) as cursor:
        cursor.execute(text, params, binary=True)
        return cursor.fetchall()


async def fetch_on_async(conn: psycopg.AsyncConnection[Any], sql: str, args: tuple[Any, ...]) -> Rows:
    text, params = bind(sql, args, "psycopg_binary")
    async with psycopg.AsyncCursor(conn, row_factory=tuple_row) as cursor:
        await cursor.execute(text, params, binary=True)
        return await cursor.fetchall()


class Connection:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def fetch(self, sql: str, args: tuple[Any, ...]) -> Rows:
        return fetch_on(self._conn, sql, args)

    def close(self) -> None:
        """The connection is the caller's to close."""


class Pool:
    def __init__(self, pool: psycopg_pool.ConnectionPool[Any]) -> None:
        self._pool = pool

    def fetch(self, sql: str, args: tuple[Any, ...]) -> Rows:
        with self._pool.connection() as conn:
            return fetch_on(conn, sql, args)

    def close(self) -> None:
        """The pool is the caller's to close."""


class OwnedConnection:
    """A connection of pgqd's own, in autocommit mode (each call commits by itself), opened on first use and
    opened again after it broke: with no transaction of the caller's on it, nothing can be lost by that. Its
    waits are bounded (``pgqd.producers.owned_bounds``)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None

    def fetch(self, sql: str, args: tuple[Any, ...]) -> Rows:
        if self._conn is None or self._conn.closed or self._conn.broken:
            params = with_default_bounds(psycopg.conninfo.conninfo_to_dict(self._dsn))
            self._conn = psycopg.connect(**{**params, "application_name": "pgqd-producer"}, autocommit=True)
        return fetch_on(self._conn, sql, args)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class AsyncConnection:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def fetch(self, sql: str, args: tuple[Any, ...]) -> Rows:
        return await fetch_on_async(self._conn, sql, args)

    async def close(self) -> None:
        """The connection is the caller's to close."""


class AsyncPool:
    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def fetch(self, sql: str, args: tuple[Any, ...]) -> Rows:
        async with self._pool.connection() as conn:
            return await fetch_on_async(conn, sql, args)

    async def close(self) -> None:
        """The pool is the caller's to close."""
