"""The web UI's database pool: the daemon's bounded pool (``pgqd.backend.bounded``), with the whole wait of a page
for the database kept to one command timeout.

Pages run their statements on a connection taken with ``acquire`` (a read-only transaction, see
``pgqd.ops.stats``). When such a statement runs out of time on a connection that no longer answers, asyncpg
would wait for its cancel to be answered before giving the connection back, on the same dead socket, doubling
the wait; here the connection is closed at once instead, as the bounded pool does for its own calls. A page
waiting for a connection while the others hang waits one command timeout, not that plus a connect timeout.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from pgqd.backend.bounded import BoundedPool


class WebPool(BoundedPool):
    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        started = time.monotonic()
        try:
            conn = await self.pool.acquire(timeout=self.timeouts.command)
        except Exception as exc:
            raise self._failure(exc, started, "waiting for a connection") from exc
        try:
            yield conn
        except BaseException as exc:
            if isinstance(exc, TimeoutError) or not isinstance(exc, Exception):
                with contextlib.suppress(asyncpg.InterfaceError):  # unless asyncpg closed it already
                    conn.terminate()
                if isinstance(exc, TimeoutError):
                    self.cut_stalled(since=started)
            raise
        finally:
            await self._release(conn)
