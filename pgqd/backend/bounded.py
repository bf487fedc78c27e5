"""Database calls with a time bound: a pool that never hands out a connection left waiting on a dead socket, TCP
keepalives, and one log line at the start and one at the end of each database outage.

A failover or a partition leaves connections open but silent: no RST, no EOF, and a statement sent on one never
returns. Every call made here is bounded by ``DatabaseTimeouts.command``; a call that runs out of time closes
its connection at once (asyncpg's cancel would wait for an answer on the same dead socket) and retires the pool's
other connections, which share its network path, so the next call runs on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import structlog

from pgqd.backend.connection_pool import ConnectionPool, PoolClosed
from pgqd.errors import BackendUnavailable, ReadOnlyDatabase

log = structlog.get_logger("pgqd.database")
T = TypeVar("T")

# Errors after which the same call may succeed on a new connection: the server went away, is starting or
# shutting down, is out of connections, or the connection broke under us; or (class 40) it rolled the
# transaction back to break a deadlock, and running the call again is what it asks for.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57")

_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    # A pooled connection whose server process was terminated while it sat idle gets the termination notice
    # before the socket closes; a query sent in between fails with "another operation is in progress".
    asyncpg.InternalClientError,
    PoolClosed,
)


# A write (or a LISTEN) sent to a read-only server: a standby, reached by mistake or before a failover ends.
READ_ONLY_SQLSTATE = "25006"


def is_read_only(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) == READ_ONLY_SQLSTATE


def is_transient(exc: BaseException) -> bool:
    if is_read_only(exc):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", "") or ""
        return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES or isinstance(exc, asyncpg.PostgresConnectionError)
    return isinstance(exc, _TRANSIENT_ERRORS)


async def guard(call: Awaitable[T]) -> T:
    """Runs one database call, turning connection-level failures into BackendUnavailable."""
    try:
        return await call
    except Exception as exc:
        if is_transient(exc):
            raise unavailable(exc) from exc
        raise


def unavailable(exc: BaseException) -> BackendUnavailable:
    """The retryable error a transient failure is raised as (a read-only server's says what to fix)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ReadOnlyDatabase(text) if is_read_only(exc) else BackendUnavailable(f"database unavailable: {text}")


# The command timeout derived from worker_timeout: several heartbeats fit in a worker_timeout, and a heartbeat
# that times out must leave time for the next one on a new connection before the worker counts as dead.
COMMAND_SHARE_OF_WORKER_TIMEOUT = 0.25
MIN_DERIVED_COMMAND = 1.0
MAX_DERIVED_COMMAND = 15.0
DEFAULT_CONNECT = 5.0


@dataclass(frozen=True)
class DatabaseTimeouts:
    """How long a database call may take, in seconds.

    ``command`` bounds every statement, a wait for a pooled connection, and a close; the server cancels a
    statement after it too (``statement_timeout``). ``connect`` bounds opening a connection. The LISTEN
    connection makes a round trip every ``probe_every`` seconds to notice a dead peer.
    """

    command: float = 7.5
    connect: float = DEFAULT_CONNECT
    probe_every: float = 5.0

    @classmethod
    def derive(
        cls, worker_timeout: float, command: float | None = None, connect: float | None = None
    ) -> DatabaseTimeouts:
        """The timeouts for a worker: explicit values win; unset ones follow from ``worker_timeout``."""
        if command is None:
            share = worker_timeout * COMMAND_SHARE_OF_WORKER_TIMEOUT
            command = min(max(share, MIN_DERIVED_COMMAND), MAX_DERIVED_COMMAND)
        return cls(command=command, connect=connect or DEFAULT_CONNECT, probe_every=min(command, 5.0))

    @property
    def server_settings(self) -> dict[str, str]:
        return {"statement_timeout": f"{round(self.command * 1000)}ms"}


def tune_socket(conn: Any, timeouts: DatabaseTimeouts) -> None:
    """TCP keepalives and a user timeout on a connection's socket, where the platform has them, so that the
    kernel gives up on a peer that vanished instead of waiting for hours (Linux: about 15 minutes)."""
    transport = getattr(conn, "_transport", None)  # asyncpg has no public accessor for it
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a Unix socket: the peer is on this host and its death closes the socket
    idle = max(1, round(timeouts.command))
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), idle),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), max(1, idle // 3)),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), 3),
        # Unacknowledged data older than this ends the connection (it also caps the keepalive probing).
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), round(timeouts.command * 2000)),
    ]
    for level, option, value in options:
        if option is not None:
            try:
                sock.setsockopt(level, option, value)
            except OSError:
                continue


class DatabaseHealth:
    """Whether this process reaches the database: one line when an outage starts, one when it ends."""

    def __init__(self, on_recovered: Callable[[], None] | None = None) -> None:
        self._on_recovered = on_recovered
        self.down_since: float | None = None
        self.last_ok = time.monotonic()
        self.failed_calls = 0
        # Called on every failure, e.g. to check the LISTEN connection at once.
        self.on_failure: list[Callable[[], None]] = []

    @property
    def available(self) -> bool:
        return self.down_since is None

    def succeeded(self) -> None:
        self.last_ok = time.monotonic()
        if self.down_since is None:
            return
        outage = self.last_ok - self.down_since
        log.warning("database reachable again", outage_s=round(outage, 3), failed_calls=self.failed_calls, pid=_pid())
        self.down_since = None
        self.failed_calls = 0
        if self._on_recovered is not None:
            self._on_recovered()

    def failed(self, exc: BaseException, call_started: float) -> None:
        self.failed_calls += 1
        for callback in self.on_failure:
            callback()
        if self.down_since is not None:
            return
        # The outage began when the first failing call was sent, not when it gave up.
        self.down_since = min(call_started, time.monotonic())
        log.warning("database unreachable", error=describe_error(exc), pid=_pid())


def _pid() -> int:
    return os.getpid()


def describe_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"{text}; {ReadOnlyDatabase.HINT}" if is_read_only(exc) else text


def _terminate(conn: Any) -> None:
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()  # unless asyncpg has already closed it


class CommandTimeout(BackendUnavailable):
    """A database call ran out of time (the connection it used was closed)."""


class BoundedPool:
    """A pool of connections (``connection_pool.py``) behind the four calls the PostgreSQL adapter makes, each
    bounded in time.

    Transient failures raise ``BackendUnavailable`` (callers retry), and feed ``health``.
    """

    def __init__(
        self,
        timeouts: DatabaseTimeouts,
        health: DatabaseHealth,
        size: int,
        connect: Callable[[], Awaitable[Any]],
        prepare: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        """``connect`` opens one connection; ``prepare`` runs on each new one (also those that replace lost ones)
        before it is used."""
        self.pool = ConnectionPool(self._connect, size)
        self._open_connection = connect
        self._prepare = prepare
        self.timeouts = timeouts
        self.health = health
        self._in_flight: dict[int, tuple[Any, float]] = {}
        # When each connection last proved alive: opened, or answered a call.
        self._alive_at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    @classmethod
    async def open(
        cls,
        dsn: str | None,
        size: int,
        timeouts: DatabaseTimeouts,
        health: DatabaseHealth,
        *,
        prepare: Callable[[Any], Awaitable[None]] | None = None,
        **options: Any,
    ) -> BoundedPool:
        """``options`` go to ``asyncpg.connect``."""

        async def connect() -> Any:
            return await asyncpg.connect(dsn, **options)

        bounded = cls(timeouts, health, size, connect, prepare)
        # Every connection is opened up front: opened on demand, the first claims and flushes after start-up
        # (or after a failover) paid for a connection of their own, 10-20 ms, the slowest pickups there were.
        await guard(asyncio.wait_for(bounded.pool.fill(), timeouts.connect + timeouts.command))
        return bounded

    async def _connect(self) -> Any:
        conn = await self._open_connection()
        try:
            tune_socket(conn, self.timeouts)
            if self._prepare is not None:
                await self._prepare(conn)
        except BaseException:
            conn.terminate()
            raise
        self._alive_at[conn] = time.monotonic()
        return conn

    # How long a caller may wait for a connection: the command timeout, and a connect for when it opens one.
    @property
    def acquire_limit(self) -> float:
        return self.timeouts.command + self.timeouts.connect

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        """A connection of the pool for several statements (a transaction): the wait for it is bounded, and its
        statements by the connection's own command timeout (asyncpg's ``command_timeout``). A statement that runs
        out of time closes the connection at once: asyncpg would wait for its cancel to be answered, on what may be
        a dead socket."""
        started = time.monotonic()
        conn = await self._take(started)
        try:
            yield conn
        except BaseException as exc:
            if isinstance(exc, TimeoutError) or not isinstance(exc, Exception):
                _terminate(conn)
                if isinstance(exc, TimeoutError):
                    self.cut_stalled(since=started)
            raise
        finally:
            self.pool.release(conn)

    async def _take(self, started: float) -> Any:
        conn = self.pool.lend_idle()
        if conn is not None:
            return conn
        try:
            async with asyncio.timeout(self.acquire_limit):
                return await self.pool.acquire()
        except Exception as exc:
            raise self._failure(exc, started, "waiting for a connection") from exc

    async def fetch(self, query: str, *args: Any) -> Any:
        return await self._call("fetch", query, args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return await self._call("fetchrow", query, args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._call("fetchval", query, args)

    async def execute(self, query: str, *args: Any) -> Any:
        return await self._call("execute", query, args)

    async def _call(self, method: str, query: str, args: tuple[Any, ...]) -> Any:
        limit = self.timeouts.command
        started = time.monotonic()
        conn = await self._take(started)
        self._in_flight[id(conn)] = (conn, started)
        try:
            result = await getattr(conn, method)(query, *args, timeout=limit)
        except BaseException as exc:
            if isinstance(exc, TimeoutError) or not isinstance(exc, Exception):
                # No answer in time, or the caller gave up: the answer may never come, and asyncpg's cancel would
                # wait for it on the same socket. Close the connection now.
                _terminate(conn)
            elif is_read_only(exc):
                # A standby: a new connection may reach the primary (a multi-host DSN picks its host anew).
                _terminate(conn)
            if isinstance(exc, TimeoutError):
                self.cut_stalled(since=started)
            self.pool.release(conn)
            if isinstance(exc, TimeoutError) or (isinstance(exc, Exception) and is_transient(exc)):
                raise self._failure(exc, started, "running a statement") from exc
            raise
        finally:
            self._in_flight.pop(id(conn), None)
        self._alive_at[conn] = time.monotonic()
        self.pool.release(conn)
        self.health.succeeded()
        return result

    def cut_stalled(self, since: float) -> None:
        """A call sent at ``since`` got no answer: the connections that have not answered since then likely
        share its fate (a failover, a partition). Close them, idle or busy: their calls fail now and are retried
        on new connections, rather than each waiting out its own timeout."""
        self.pool.terminate_idle()
        for conn, _ in list(self._in_flight.values()):
            if self._alive_at.get(conn, 0.0) < since:
                _terminate(conn)

    def _failure(self, exc: BaseException, started: float, doing: str) -> BackendUnavailable:
        self.health.failed(exc, started)
        if isinstance(exc, TimeoutError):
            waited = time.monotonic() - started
            return CommandTimeout(
                f"database unavailable: no answer after {waited:.1f}s {doing}"
                f" (limit [database] command_timeout = {self.timeouts.command:g}s)"
            )
        return unavailable(exc)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), self.timeouts.command)
        except Exception:
            self.pool.terminate()

    def terminate(self) -> None:
        self.pool.terminate()
