"""The queue gauges, collected by one worker process per daemon (the lead worker, which also fires the
schedules) and published through the metrics files the workers already write, so the supervisor serves them
without a query of its own.

The statement (``pgqd/sql/queue_gauges.py``) costs the same whatever the size of the jobs table; it runs on a
connection of its own every ``COLLECT_EVERY`` seconds, bounded by a timeout. A failed or timed-out collection
drops that connection (a hung one must not be reused) and keeps the last figures until the next one succeeds.
"""

from __future__ import annotations

import structlog

from pgqd.daemon.metrics import QueueGaugeSamples
from pgqd.daemon.worker.side_connection import SideConnection
from pgqd.identifiers import Names
from pgqd.sql import render
from pgqd.sql.pauses import PAUSES
from pgqd.sql.queue_gauges import QUEUE_GAUGES

log = structlog.get_logger("pgqd.daemon.worker.queue_gauges")

COLLECT_EVERY = 5.0
COUNT_LIMIT = 10_000
# At most this many entrypoints per status, and distinct priorities per entrypoint, are looked at.
MAX_GROUPS = 1000
TIMEOUT = 5.0


class QueueGaugeCollector:
    def __init__(self, dsn: str | None, names: Names, samples: QueueGaugeSamples) -> None:
        self.dsn = dsn
        self.statement = render(QUEUE_GAUGES, names)
        self.pauses_statement = render(PAUSES, names)
        self.samples = samples
        self.collected = 0
        self._side = SideConnection(
            dsn, "pgqd-gauges", TIMEOUT, log, "queue gauges not collected; keeping the last figures"
        )

    async def turn(self) -> float:
        await self.collect()
        return COLLECT_EVERY

    def close(self) -> None:
        self._side.close()

    async def collect(self) -> None:
        try:
            conn = await self._side.get()
            rows = await conn.fetch(self.statement, COUNT_LIMIT, MAX_GROUPS, timeout=TIMEOUT)
            pauses = await conn.fetch(self.pauses_statement, timeout=TIMEOUT)
        except Exception as exc:  # whatever the database or the network does, try again next time
            self._side.failed(exc)
            return
        if self._side.succeeded():
            log.info("queue gauges collected again")
        self.samples.update(
            [(r["entrypoint"], r["status"], r["jobs"], r["oldest_age"]) for r in rows],
            [(r["entrypoint"], r["paused"]) for r in pauses],
        )
        self.collected += 1
