"""The connection side of the PostgreSQL adapter: the LISTEN connection that delivers events (checked with a
round trip every few seconds, and re-opened with backoff when it drops or stops answering). What the notices say
is in pgqd/sql/notices.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from pgqd.backend.base import EventCallback
from pgqd.backend.bounded import DatabaseHealth, DatabaseTimeouts, describe_error, guard
from pgqd.backoff import Backoff
from pgqd.errors import BackendUnavailable
from pgqd.models import Event
from pgqd.sql.notices import parse_event

log = structlog.get_logger("pgqd.database")

__all__ = ["PgSubscription", "close_connection"]


class PgSubscription:
    """A LISTEN on the events channel, on a connection of its own that is re-opened when it drops.

    With ``reconnect``, one task owns the connection: it makes a round trip every ``timeouts.probe_every``
    seconds (a peer that vanished without a word is noticed within ``probe_every + command`` seconds), re-opens
    the connection with backoff when it is lost or stops answering, and then sends a ``reconnected`` event so
    that the worker claims at once (notifications sent while it was away are lost).
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        channel: str,
        callback: EventCallback,
        *,
        reconnect: bool,
        close_connection: Callable[[Any], Awaitable[None]],
        timeouts: DatabaseTimeouts | None = None,
        health: DatabaseHealth | None = None,
        on_stalled: Callable[[float], None] | None = None,
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._callback = callback
        self._reconnect = reconnect
        self._close_connection = close_connection
        self._timeouts = timeouts or DatabaseTimeouts()
        self._health = health
        self._on_stalled = on_stalled
        self._conn: Any = None
        self._closed = False
        self._lost = False
        self._wake = asyncio.Event()
        if health is not None:
            health.on_failure.append(self.check_now)
        self._watcher: asyncio.Task[None] | None = None
        self.reconnects = 0

    async def start(self) -> None:
        await self._open()
        if self._reconnect:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _open(self) -> None:
        started = time.monotonic()
        try:
            conn = await guard(self._connect())
            try:
                await guard(asyncio.wait_for(conn.add_listener(self._channel, self._on_notification), self._limit))
            except BaseException:
                conn.terminate()
                await self._close_connection(conn)
                raise
        except BackendUnavailable as exc:
            if self._health is not None:
                self._health.failed(exc, started)
            raise
        conn.add_termination_listener(self._on_termination)
        self._conn = conn
        self._lost = False
        if self._health is not None:
            self._health.succeeded()

    @property
    def _limit(self) -> float:
        return self._timeouts.command

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        event = parse_event(payload)
        if event is not None:
            self._callback(event)

    def _on_termination(self, conn: Any) -> None:
        if conn is self._conn or getattr(self._conn, "_con", None) is conn:
            self._lost = True
            self._wake.set()

    def check_now(self) -> None:
        """Another call failed: this connection may share its fate, so check it without waiting."""
        self._wake.set()

    async def _watch(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._timeouts.probe_every)
            self._wake.clear()
            if self._lost or not await self._answers():
                await self._reopen()

    async def _answers(self) -> bool:
        """A round trip on the listening connection. Its failure alone is not an outage (a connection can die
        while new ones work, as after a failover): whether the database can be reached is for the reconnect to
        find out."""
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        started = time.monotonic()
        try:
            await conn.fetchval("SELECT 1", timeout=self._limit)
        except Exception as exc:
            log.warning("the listening connection stopped answering; reconnecting", error=describe_error(exc))
            if self._on_stalled is not None:
                self._on_stalled(started)
            return False
        return True

    async def _reopen(self) -> None:
        await self._drop()
        backoff = Backoff()
        while not self._closed:
            try:
                await self._open()
            except BackendUnavailable:
                await asyncio.sleep(backoff.next())
                continue
            self.reconnects += 1
            self._callback(Event(kind="reconnected"))
            return

    async def _drop(self) -> None:
        """Closes the current connection without waiting on it: it may be dead, and a goodbye would hang."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            conn.remove_termination_listener(self._on_termination)
        conn.terminate()
        with contextlib.suppress(Exception):
            await self._close_connection(conn)

    async def close(self) -> None:
        self._closed = True
        if self._health is not None and self.check_now in self._health.on_failure:
            self._health.on_failure.remove(self.check_now)
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                conn.remove_termination_listener(self._on_termination)
                await asyncio.wait_for(conn.remove_listener(self._channel, self._on_notification), self._limit)
            await self._close_connection(conn)


async def close_connection(conn: Any, timeout: float = 5.0) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), timeout)
    if not conn.is_closed():
        conn.terminate()
