"""Vacuuming the jobs table while a flood of jobs goes through it, by the lead worker of each daemon.

A claimed job leaves its old row version in the ready index, at the head, where every later claim steps over it
until VACUUM removes it. Draining a deep queue therefore makes each claim dearer as it goes: the server's CPU per
claimed job tripled over 400,000 jobs (docs/performance.md). Autovacuum visits a database at most once per
``autovacuum_naptime`` (a minute by default), or never where it is off, and at tens of thousands of jobs a second
a minute is millions of dead rows. So the lead worker looks at the table's dead-row count every ``CHECK_EVERY``
seconds and vacuums it once they are many, on a connection of its own: a vacuum may take seconds on a large
table, and must hold neither a worker's pooled connection nor its heartbeat. ``SKIP_LOCKED`` makes a daemon
skip a vacuum another daemon (or autovacuum) is already running.

The threshold is a number of dead rows, whatever the live ones: one relative to the live rows grew with a backlog,
so under overload the vacuum stopped, dead entries piled up at the head of the ready index, every claim got
dearer and the backlog grew faster (a death spiral). What a deep table makes dearer is the vacuum itself (it reads
every index whole), so that is bounded in time instead: vacuums take at most ``MAX_TIME_SHARE`` of the time.

A vacuum cannot remove the rows that a transaction older than them may still see: an application holding a
snapshot keeps them. So what counts is the dead rows added since the last vacuum left some, not all of them;
otherwise such a transaction would have the table vacuumed every second, to no avail.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import structlog

from pgqd.daemon.worker.side_connection import SideConnection
from pgqd.identifiers import Names

log = structlog.get_logger("pgqd.daemon.worker.vacuum")

CHECK_EVERY = 1.0
# Vacuum once the dead rows since the last vacuum reach this many. A claimed job leaves about two (the version its
# claim replaced, whose entry stays at the head of the ready index, and the one its outcome deleted): a vacuum
# every ~5,000 claimed jobs, however deep the backlog. A claim that reads from the start of the ready index steps
# over the entries of every job claimed since the last vacuum (a worker's first claim, and one every half second
# or after a short claim; the others start where the worker's last claim did), while a vacuum of a table without
# a deep backlog costs tens of milliseconds: 100,000 had claims of 10 three times dearer before each vacuum than
# after it under a steady load (docs/performance.md, the soak).
MIN_DEAD_ROWS = 10_000
# The next vacuum waits until the last one's length is at most this share of the time since it started. Since
# claims read the ready jobs from where the worker's last claim started (migration 0017), the dead entries at the
# head cost a deep queue's claims little, and the vacuum's own reading of every index is what depth costs: in the
# soak at 150 % of capacity (a backlog of 2 million), 0.1 kept 95 % of capacity and drained at 99 %, against 88 %
# and 93 % with 0.2 (docs/performance.md).
MAX_TIME_SHARE = 0.1
CHECK_TIMEOUT = 5.0
VACUUM_TIMEOUT = 600.0

# The counts are the statistics system's (sent by each backend at most once a second), cheap to read.
DEAD_ROWS = """
SELECT s.n_dead_tup, s.n_live_tup, s.vacuum_count, pg_has_role(c.relowner, 'USAGE') AS may_vacuum
FROM pg_class AS c JOIN pg_stat_all_tables AS s ON s.relid = c.oid
WHERE c.oid = to_regclass($1)
"""


class JobsTableUpkeep:
    """Vacuums the jobs table once ``min_dead_rows`` dead rows were added since its last vacuum, and vacuums take
    at most ``MAX_TIME_SHARE`` of the time; stops for good if this role may not vacuum it."""

    def __init__(
        self,
        dsn: str | None,
        names: Names,
        min_dead_rows: int = MIN_DEAD_ROWS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = names.table("jobs")
        self.min_dead_rows = min_dead_rows
        self.clock = clock
        self.vacuums = 0
        self.not_before = -math.inf  # when the time share lets the next vacuum start
        # Dead rows the last vacuum could not remove (still visible to an older transaction).
        self.dead_left = 0
        self._side = SideConnection(
            dsn,
            "pgqd-upkeep",
            CHECK_TIMEOUT,
            log,
            "jobs table upkeep failed; trying again",
            # The server gives up when this process does, so no vacuum is left running unseen.
            settings={"statement_timeout": f"{round(VACUUM_TIMEOUT * 1000)}ms"},
        )

    async def turn(self) -> float | None:
        # None: this role may not vacuum the table, and asking again would not change that.
        return CHECK_EVERY if await self.check() else None

    async def check(self) -> bool:
        """Vacuums if due; False when this role may not vacuum the table (there is no point asking again)."""
        try:
            conn = await self._side.get()
            row = await conn.fetchrow(DEAD_ROWS, self.table, timeout=CHECK_TIMEOUT)
            if row is None:
                return True  # not installed yet, or uninstalled under us
            if not row["may_vacuum"]:
                log.info("this role does not own the jobs table: vacuuming it is left to autovacuum", table=self.table)
                return False
            dead = row["n_dead_tup"]
            self.dead_left = min(self.dead_left, dead)  # autovacuum, or another daemon, vacuumed meanwhile
            if dead - self.dead_left >= self.min_dead_rows and self.clock() >= self.not_before:
                await self._vacuum(conn, row)
        except Exception as exc:  # whatever the database or the network does, try again next time
            self._side.failed(exc)
            return True
        self._side.succeeded()
        return True

    async def _vacuum(self, conn: Any, before: Any) -> None:
        started = self.clock()
        await conn.execute(f"VACUUM (SKIP_LOCKED) {self.table}", timeout=VACUUM_TIMEOUT)
        took = self.clock() - started
        self.not_before = started + took / MAX_TIME_SHARE
        after = await conn.fetchrow(DEAD_ROWS, self.table, timeout=CHECK_TIMEOUT)
        if after is None or after["vacuum_count"] == before["vacuum_count"]:
            # Skipped (its lock was taken): another daemon's vacuum, or autovacuum, is doing the work.
            log.debug("the jobs table is being vacuumed by another session", dead_rows=before["n_dead_tup"])
            return
        self.vacuums += 1
        self.dead_left = after["n_dead_tup"]
        log.info(
            "vacuumed the jobs table",
            dead_rows=before["n_dead_tup"],
            live_rows=before["n_live_tup"],
            left=self.dead_left,
            took_s=round(took, 3),
        )

    def close(self) -> None:
        self._side.close()
