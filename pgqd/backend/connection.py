"""The connection side of the PostgreSQL adapter: which errors are worth a retry, the NOTIFY payloads, and the
LISTEN connection that delivers events (re-opened with backoff when it drops)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from pgqd.backend.base import EventCallback
from pgqd.backoff import Backoff
from pgqd.errors import BackendUnavailable
from pgqd.models import Event, NewJob

T = TypeVar("T")

# Errors after which the same call may succeed on a new connection: the server went away, is starting or
# shutting down, is out of connections, or the connection broke under us.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57")

_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    # A pooled connection whose server process was terminated while it sat idle gets the termination notice
    # before the socket closes; a query sent in between fails with "another operation is in progress".
    asyncpg.InternalClientError,
)


def is_transient(exc: BaseException) -> bool:
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
            raise BackendUnavailable(f"database unavailable: {type(exc).__name__}: {exc}") from exc
        raise


def parse_event(payload: str) -> Event | None:
    try:
        data = json.loads(payload)
        kind = data.get("t")
        entrypoints = tuple(str(e) for e in data.get("e") or ())
        ids = tuple(int(i) for i in data.get("ids") or ())
        due = data.get("d")
        due_in = None if due is None else max(float(due), 0.0)
    except (ValueError, TypeError, AttributeError):
        return None
    if kind not in ("enqueued", "cancel", "finished", "slot"):
        return None
    return Event(kind=kind, entrypoints=entrypoints, ids=ids, due_in=due_in)


def wake_notice(entrypoints: Sequence[str]) -> str:
    """The NOTIFY payload that sends idle workers of these entrypoints (all when empty) to claim at once."""
    text = json.dumps({"t": "enqueued", "e": sorted(set(entrypoints))}, separators=(",", ":"))
    return text if len(text) <= 7000 else json.dumps({"t": "enqueued"})


def enqueue_notice(jobs: Sequence[NewJob]) -> str:
    """The NOTIFY payload for one enqueue statement: which entrypoints got work, and when it is due."""
    entrypoints = sorted({job.entrypoint for job in jobs})
    notice: dict[str, Any] = {"t": "enqueued", "e": entrypoints}
    if all(job.delay > 0 and job.execute_after is None for job in jobs):
        notice["d"] = min(job.delay for job in jobs)
    elif all(job.execute_after is not None or job.delay > 0 for job in jobs):
        # Absolute times are judged on the producer's clock; a worker will also learn the exact due time from
        # its next claim, so a skewed producer delays nothing by more than one poll.
        notice["d"] = 0.0
    text = json.dumps(notice, separators=(",", ":"))
    if len(text) > 7000:
        text = json.dumps({"t": "enqueued"})
    return text


class PgSubscription:
    """A LISTEN on the events channel, on a connection of its own that is re-opened when it drops."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        channel: str,
        callback: EventCallback,
        *,
        reconnect: bool,
        close_connection: Callable[[Any], Awaitable[None]],
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._callback = callback
        self._reconnect = reconnect
        self._close_connection = close_connection
        self._conn: Any = None
        self._closed = False
        self._reconnecting: asyncio.Task[None] | None = None
        self.reconnects = 0

    async def start(self) -> None:
        await self._open()

    async def _open(self) -> None:
        conn = await guard(self._connect())
        try:
            await guard(conn.add_listener(self._channel, self._on_notification))
        except BaseException:
            await self._close_connection(conn)
            raise
        conn.add_termination_listener(self._on_termination)
        self._conn = conn

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        event = parse_event(payload)
        if event is not None:
            self._callback(event)

    def _on_termination(self, _conn: Any) -> None:
        self._conn = None
        if self._closed or not self._reconnect or self._reconnecting is not None:
            return
        self._reconnecting = asyncio.get_running_loop().create_task(self._reopen())

    async def _reopen(self) -> None:
        backoff = Backoff()
        try:
            while not self._closed:
                try:
                    await self._open()
                except BackendUnavailable:
                    await asyncio.sleep(backoff.next())
                    continue
                self.reconnects += 1
                self._callback(Event(kind="reconnected"))
                return
        finally:
            self._reconnecting = None

    async def close(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                conn.remove_termination_listener(self._on_termination)
                await conn.remove_listener(self._channel, self._on_notification)
            await self._close_connection(conn)


async def close_connection(conn: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), timeout=5)
    if not conn.is_closed():
        conn.terminate()
