"""Keeping the log's hourly rollup current, by the lead worker of each daemon (migration 0007, ``pgqd.sql.history``).

The web UI's charts of a day or a week read a few thousand rollup rows instead of up to millions of log rows.
Every ``EVERY`` seconds this rolls up the log rows of the current hour again (and of the hour before, for a few
minutes after it ended, for outcomes written late), so the rollup is at most a minute behind. On its first pass
it catches up on the hours it missed while no daemon ran, up to ``KEEP``, an hour at a time so that no statement
runs long; and it prunes the rollup rows older than ``KEEP``.

It reads the log only by ranges of ``finished_at`` and writes nothing that a daemon depends on, so it runs on a
connection of its own and simply tries again after any failure. An advisory lock keeps two daemons of one install
from doing the same work at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from pgqd.daemon.worker.side_connection import SideConnection
from pgqd.identifiers import Names
from pgqd.sql.history import HistoryStatements

log = structlog.get_logger("pgqd.daemon.worker.log_rollup")

EVERY = 60.0
# Outcomes reach the log a little after they finish (the flush, a reconnect): an hour is rolled up again for
# this long after it ended.
SETTLE = timedelta(minutes=5)
KEEP = timedelta(days=8)
STEP = timedelta(hours=1)
TIMEOUT = 60.0

TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext($1))"


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


class LogRollup:
    """Rolls up the log into ``log_rollup`` every ``every`` seconds; ``step()`` does one pass (for tests)."""

    def __init__(self, dsn: str | None, names: Names, every: float = EVERY) -> None:
        self.sql = HistoryStatements(names)
        self.lock_key = names.lock_key + ":log_rollup"
        self.every = every
        # The start of the oldest hour the next pass rolls up; None until the first pass has found it.
        self.resume_from: datetime | None = None
        self._side = SideConnection(
            dsn,
            "pgqd-log-rollup",
            TIMEOUT,
            log,
            "rolling up the log for the history charts failed; trying again",
            settings={"statement_timeout": f"{round(TIMEOUT * 1000)}ms"},
        )

    async def turn(self) -> float:
        await self.step()
        return self.every

    def close(self) -> None:
        self._side.close()

    async def step(self) -> None:
        try:
            conn = await self._side.get()
            await self._roll_up(conn)
        except Exception as exc:  # whatever the database or the network does, try again next time
            self._side.failed(exc)
            return
        self._side.succeeded()

    async def _roll_up(self, conn: Any) -> None:
        now = await conn.fetchval("SELECT now()")
        start = self.resume_from
        if start is None:
            rolled_at = await conn.fetchval(self.sql.rolled_at)
            start = hour_of(now - KEEP) if rolled_at is None else max(hour_of(rolled_at), hour_of(now - KEEP))
        start = min(start, hour_of(now - SETTLE))
        end = hour_of(now) + STEP
        while start < end:
            async with conn.transaction():
                if not await conn.fetchval(TRY_LOCK, self.lock_key):
                    return  # another daemon is at it
                await conn.execute(self.sql.roll_up, start, start + STEP)
                if start + STEP > now:
                    await conn.execute(self.sql.mark_rolled, now)
            start += STEP
        await conn.execute(self.sql.prune_rollup, now - KEEP)
        self.resume_from = hour_of(now)
