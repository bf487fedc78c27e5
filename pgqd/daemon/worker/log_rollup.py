"""Keeping the log's hourly rollup current, by the lead worker of each daemon (migration 0007, ``pgqd.sql.history``).

The web UI's charts of a day or a week read a few thousand rollup rows instead of up to millions of log rows.
Every ``EVERY`` seconds this counts the log rows that finished since the last pass, up to ``SETTLE`` ago, and adds
them to their hours' counts: each row is counted once, so a pass costs what finished since the one before, however
full the hour. (Until schema version 15 each pass counted the whole current hour again: at 15,000 jobs a second a
pass read millions of rows, used a core for seconds and held a snapshot all that time, under which VACUUM could
remove none of the jobs table's dead rows; the claims slowed to a crawl once a minute, docs/performance.md.)

A span is counted in slices, each its own statement and transaction, sized so that each takes about
``SLICE_TARGET_S``: no statement holds a snapshot for long, however many rows a span holds. On its first pass it
catches up on what it missed while no daemon ran, up to ``KEEP``, starting at the first row it finds there; and
it prunes the rollup rows older than ``KEEP``.
An outcome written more than ``SETTLE`` after its job finished (after a long outage) is in the log and its
one-hour view, not in the rollup.

It reads the log only by ranges of ``finished_at`` and writes nothing that a daemon depends on, so it runs on a
connection of its own and simply tries again after any failure. An advisory lock, and the position counted to
(``log_rollup_state.rolled_at``) moved in the same transaction as the counts, keep two daemons of one install
from counting a row twice.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from pgqd.daemon.worker.side_connection import SideConnection
from pgqd.identifiers import Names
from pgqd.sql.history import HistoryStatements

log = structlog.get_logger("pgqd.daemon.worker.log_rollup")

EVERY = 60.0
# Outcomes reach the log a little after their jobs finish (the outcome flush): a row is counted once it finished
# this long ago.
SETTLE = timedelta(seconds=30)
KEEP = timedelta(days=8)
# A slice of the log counted in one statement: from LONGEST_SLICE down to SHORTEST_SLICE, halved or doubled so
# that each takes about SLICE_TARGET_S. A pass starts short (the log may be taking thousands of rows a second) and
# doubles over a quiet stretch. A stretch with no row at all is not sliced: the pass moves to the next row.
FIRST_SLICE = timedelta(seconds=10)
LONGEST_SLICE = timedelta(hours=1)
SHORTEST_SLICE = timedelta(seconds=1)
SLICE_TARGET_S = 0.2
TIMEOUT = 60.0

TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext($1))"


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def next_slice(slice_: timedelta, took_s: float) -> timedelta:
    """The length of the next slice, after one of ``slice_`` took ``took_s`` seconds."""
    if took_s > SLICE_TARGET_S:
        return max(slice_ / 2, SHORTEST_SLICE)
    if took_s < SLICE_TARGET_S / 4:
        return min(slice_ * 2, LONGEST_SLICE)
    return slice_


class LogRollup:
    """Rolls up the log into ``log_rollup`` every ``every`` seconds; ``step()`` does one pass (for tests)."""

    def __init__(self, dsn: str | None, names: Names, every: float = EVERY, settle: timedelta = SETTLE) -> None:
        self.sql = HistoryStatements(names)
        self.lock_key = names.lock_key + ":log_rollup"
        self.every = every
        self.settle = settle
        self.slice = FIRST_SLICE
        self.slices = 0  # slices counted, in all passes
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
        now: datetime = await conn.fetchval("SELECT now()")
        until = now - self.settle
        look_ahead = True
        while True:
            async with conn.transaction():
                if not await conn.fetchval(TRY_LOCK, self.lock_key):
                    return  # another daemon is at it
                # Read under the lock: another daemon may have counted since this one last looked.
                counted: datetime | None = await conn.fetchval(self.sql.rolled_at)
                start = hour_of(now - KEEP) if counted is None else max(counted, hour_of(now - KEEP))
                if start >= until:
                    break
                if look_ahead:
                    # Over a stretch with nothing in it, the pass goes straight to the next row: sliced, a new
                    # install's eight empty days took about 200 transactions, 0.8 s of round trips as the
                    # daemon's first jobs ran (docs/performance.md).
                    first: datetime | None = await conn.fetchval(self.sql.first_finished, start, until)
                    if first is None:
                        await conn.execute(self.sql.mark_rolled, until)
                        break
                    start = first
                end = min(start + self.slice, until)
                began = time.monotonic()
                added = await conn.execute(self.sql.roll_up, start, end)
                await conn.execute(self.sql.mark_rolled, end)
            self.slices += 1
            # A slice that counted nothing may be the start of another empty stretch.
            look_ahead = added.endswith(" 0")
            self.slice = next_slice(self.slice, time.monotonic() - began)
        await conn.execute(self.sql.prune_rollup, now - KEEP)
