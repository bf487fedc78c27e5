"""A fixed number of asyncpg connections, each lent to one caller at a time: the pool under ``BoundedPool``.

asyncpg's own pool costs about as much CPU as the statement it lends a connection for: a timed acquire waits in a
task of its own, every release runs in a shielded task, and each loan wraps the connection in a proxy. A worker
makes a call per claim and per outcome flush, so at batch 10 that was a tenth of its CPU (docs/performance.md).
This pool lends the connection itself and does no more than a loan needs: an idle connection is taken at once; a
caller that finds none waits on a future, in its own task, for the next one given back.

A connection that comes back closed (a timed-out call closed it, or the server went away) leaves its place to the
next caller, who opens a new one, so the pool never lends a connection it knows to be dead and never holds more
than ``size``. A connection that comes back inside a transaction (a caller's transaction cut short) is closed
rather than lent again in that state.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any


class PoolClosed(Exception):
    """The pool was closed while a caller waited for a connection, or before it asked (a transient failure for the
    bounded pool, as asyncpg's pool's own error was)."""


class ConnectionPool:
    def __init__(self, connect: Callable[[], Awaitable[Any]], size: int) -> None:
        """``connect`` opens one connection ready for use (its set-up included)."""
        if size < 1:
            raise ValueError(f"a pool needs at least one connection, not {size}")
        self._connect = connect
        self.size = size
        self._idle: list[Any] = []
        self._lent: set[Any] = set()
        self._opening = 0
        # Callers waiting for a connection, first come first served. A waiter is handed a connection, or None: a
        # place came free with no connection in it, and the waiter opens one.
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._closing = False
        self._all_back: asyncio.Event | None = None

    async def fill(self) -> None:
        """Opens every connection up front; on a failure closes those that opened and raises it."""
        opened = await asyncio.gather(*(self._connect() for _ in range(self.size)), return_exceptions=True)
        failures = [result for result in opened if isinstance(result, BaseException)]
        connections = [result for result in opened if not isinstance(result, BaseException)]
        if failures:
            for conn in connections:
                conn.terminate()
            raise failures[0]
        self._idle.extend(connections)

    def lend_idle(self) -> Any:
        """An idle connection, lent as ``acquire`` does, or None if there is none: no wait, so nothing to bound."""
        while self._idle and not self._closing:
            conn = self._idle.pop()
            if not conn.is_closed():
                self._lent.add(conn)
                return conn
        return None

    async def acquire(self) -> Any:
        """A connection, for the caller alone until it ``release``s it. The caller bounds the wait (a timeout
        around this call): a wait cut short takes nothing from the pool."""
        while True:
            if self._closing:
                raise PoolClosed("the connection pool is closed")
            conn = self.lend_idle()
            if conn is not None:
                return conn
            if len(self._lent) + self._opening < self.size:
                return await self._open()
            conn = await self._wait()
            if conn is not None:
                return conn

    async def _open(self) -> Any:
        self._opening += 1
        try:
            conn = await self._connect()
        except BaseException:
            self._opening -= 1
            self._hand_on(None)  # the place is free again: a caller waiting for a connection may open one
            raise
        self._opening -= 1
        if self._closing:
            conn.terminate()
            raise PoolClosed("the connection pool is closed")
        self._lent.add(conn)
        return conn

    async def _wait(self) -> Any:
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed a connection in the moment the wait was cut short: it goes to the next caller.
                conn = waiter.result()
                if conn is not None:
                    self.release(conn)
                else:
                    self._hand_on(None)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self, conn: Any) -> None:
        """Gives a lent connection back. Never waits: a connection that cannot be lent again is closed."""
        self._lent.discard(conn)
        if self._closing:
            if not conn.is_closed():
                self._idle.append(conn)  # close() closes it gracefully, with the others
            self._note_back()
            return
        if not conn.is_closed() and conn.is_in_transaction():
            conn.terminate()
        self._hand_on(None if conn.is_closed() else conn)

    def _hand_on(self, conn: Any) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if conn is not None:
                    self._lent.add(conn)
                waiter.set_result(conn)
                return
        if conn is not None:
            self._idle.append(conn)

    def terminate_idle(self) -> None:
        """Closes the idle connections at once (their peer may be gone: no goodbye is sent)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.terminate()

    def _note_back(self) -> None:
        if not self._lent and self._all_back is not None:
            self._all_back.set()

    def _stop_lending(self) -> None:
        self._closing = True
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(PoolClosed("the connection pool is closed"))

    async def close(self) -> None:
        """Waits for the lent connections to come back, then closes every connection gracefully. The caller
        bounds the wait, and ``terminate``s what is left if it runs out."""
        self._stop_lending()
        if self._lent:
            self._all_back = asyncio.Event()
            await self._all_back.wait()
        idle, self._idle = self._idle, []
        await asyncio.gather(*(conn.close() for conn in idle if not conn.is_closed()), return_exceptions=True)

    def terminate(self) -> None:
        """Closes every connection at once, lent ones included."""
        self._stop_lending()
        for conn in [*self._idle, *self._lent]:
            if not conn.is_closed():
                conn.terminate()
        self._idle.clear()
        self._lent.clear()
