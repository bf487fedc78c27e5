"""psycopg2: one connection. Statements run on it, so they join the transaction open there (psycopg2 begins
one with the first statement unless the connection is in autocommit mode, where each call commits itself).
psycopg2 takes ``%(name)s`` placeholders and sends the values inline, so arrays go as array literals with the
statement's casts on them."""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.extensions

from pgqd.backend.operations import Rows
from pgqd.producers.owned_bounds import with_default_bounds
from pgqd.producers.placeholders import bind


def fetch_on(conn: Any, sql: str, args: tuple[Any, ...]) -> Rows:
    text, params = bind(sql, args, "pyformat")
    # A plain cursor whatever the connection's cursor_factory says: rows are read by position.
    with conn.cursor(cursor_factory=psycopg2.extensions.cursor) as cursor:
        cursor.execute(text, params)
        rows: Rows = cursor.fetchall()
        return rows


class Connection:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def fetch(self, sql: str, args: tuple[Any, ...]) -> Rows:
        return fetch_on(self._conn, sql, args)

    def close(self) -> None:
        """The connection is the caller's to close."""


class OwnedConnection:
    """A connection of pgqd's own in autocommit mode, for a DSN when psycopg 3 is not installed; its waits are
    bounded as psycopg 3's (``pgqd.producers.owned_bounds``)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: Any = None

    def fetch(self, sql: str, args: tuple[Any, ...]) -> Rows:
        if self._conn is None or self._conn.closed:
            params = with_default_bounds(psycopg2.extensions.parse_dsn(self._dsn))
            self._conn = psycopg2.connect(**{**params, "application_name": "pgqd-producer"})
            self._conn.autocommit = True
        return fetch_on(self._conn, sql, args)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
