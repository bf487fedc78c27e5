"""Vacuuming the jobs table while a flood of jobs goes through it, by the lead worker of each daemon.

A claimed job leaves its old row version in the ready index, at the head, where every later claim steps over it
until VACUUM removes it. Draining a deep queue therefore makes each claim dearer as it goes: the server's CPU per
claimed job tripled over 400,000 jobs (docs/performance.md). Autovacuum visits a database at most once per
``autovacuum_naptime`` (a minute by default), or never where it is off, and at tens of thousands of jobs a second
a minute is millions of dead rows. So the lead worker looks at the table's dead-row count every ``CHECK_EVERY``
seconds and vacuums it once they are many, on a connection of its own: a vacuum may take seconds on a large
table, and must hold neither a worker's pooled connection nor its heartbeat. ``SKIP_LOCKED`` makes a daemon
skip a vacuum another daemon (or autovacuum) is already running.

A vacuum cannot remove the rows that a transaction older than them may still see: an application holding a
snapshot keeps them. So what counts is the dead rows added since the last vacuum left some, not all of them;
otherwise such a transaction would have the table vacuumed every second, to no avail.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from pgqd.daemon.side_connection import SideConnection
from pgqd.identifiers import Names

log = structlog.get_logger("pgqd.daemon.upkeep")

CHECK_EVERY = 1.0
# Vacuum once the dead rows reach both figures: a vacuum reads the whole table and its indexes, so on a deep
# queue it waits for dead rows in proportion.
MIN_DEAD_ROWS = 100_000
DEAD_SHARE_OF_LIVE = 0.25
CHECK_TIMEOUT = 5.0
VACUUM_TIMEOUT = 600.0

# The counts are the statistics system's (sent by each backend at most once a second), cheap to read.
DEAD_ROWS = """
SELECT s.n_dead_tup, s.n_live_tup, s.vacuum_count, pg_has_role(c.relowner, 'USAGE') AS may_vacuum
FROM pg_class AS c JOIN pg_stat_all_tables AS s ON s.relid = c.oid
WHERE c.oid = to_regclass($1)
"""


class JobsTableUpkeep:
    """Vacuums the jobs table once its dead rows reach ``min_dead_rows`` and a ``DEAD_SHARE_OF_LIVE`` of its
    live ones; stops for good if this role may not vacuum it."""

    def __init__(self, dsn: str | None, names: Names, min_dead_rows: int = MIN_DEAD_ROWS) -> None:
        self.table = names.table("jobs")
        self.min_dead_rows = min_dead_rows
        self.vacuums = 0
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

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(CHECK_EVERY)
                if not await self.check():
                    return
        finally:
            self.close()

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
            dead, live = row["n_dead_tup"], row["n_live_tup"]
            self.dead_left = min(self.dead_left, dead)  # autovacuum, or another daemon, vacuumed meanwhile
            if dead - self.dead_left >= max(self.min_dead_rows, live * DEAD_SHARE_OF_LIVE):
                await self._vacuum(conn, row)
        except Exception as exc:  # whatever the database or the network does, try again next time
            self._side.failed(exc)
            return True
        self._side.succeeded()
        return True

    async def _vacuum(self, conn: Any, before: Any) -> None:
        started = time.monotonic()
        await conn.execute(f"VACUUM (SKIP_LOCKED) {self.table}", timeout=VACUUM_TIMEOUT)
        took = round(time.monotonic() - started, 3)
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
            took_s=took,
        )

    def close(self) -> None:
        self._side.close()
