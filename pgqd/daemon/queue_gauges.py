"""The queue gauges, collected by one worker process per daemon (the lead worker, which also fires the
schedules) and published through the metrics files the workers already write, so the supervisor serves them
without a query of its own.

The statement (``pgqd/sql/queue_gauges.py``) costs the same whatever the size of the jobs table; it runs on a
connection of its own every ``COLLECT_EVERY`` seconds, bounded by a timeout. A failed or timed-out collection
drops that connection (a hung one must not be reused) and keeps the last figures until the next one succeeds.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import structlog

from pgqd.daemon.logs import mask_dsn
from pgqd.daemon.metrics import QueueGaugeSamples
from pgqd.identifiers import Names
from pgqd.sql import render
from pgqd.sql.pauses import PAUSES
from pgqd.sql.queue_gauges import QUEUE_GAUGES

log = structlog.get_logger("pgqd.daemon.queue_gauges")

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
        self._conn: Any = None
        self._failing = False

    async def run(self) -> None:
        try:
            while True:
                await self.collect()
                await asyncio.sleep(COLLECT_EVERY)
        finally:
            self._drop_connection()

    async def collect(self) -> None:
        try:
            if self._conn is None:
                self._conn = await asyncpg.connect(
                    self.dsn, timeout=TIMEOUT, server_settings={"application_name": "pgqd-gauges"}
                )
            rows = await self._conn.fetch(self.statement, COUNT_LIMIT, MAX_GROUPS, timeout=TIMEOUT)
            pauses = await self._conn.fetch(self.pauses_statement, timeout=TIMEOUT)
        except Exception as exc:  # whatever the database or the network does, try again next time
            self._drop_connection()
            if not self._failing:
                error = mask_dsn(f"{type(exc).__name__}: {exc}")
                log.warning("queue gauges not collected; keeping the last figures", error=error)
            self._failing = True
            return
        if self._failing:
            log.info("queue gauges collected again")
        self._failing = False
        self.samples.update(
            [(r["entrypoint"], r["status"], r["jobs"], r["oldest_age"]) for r in rows],
            [(r["entrypoint"], r["paused"]) for r in pauses],
        )
        self.collected += 1

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
