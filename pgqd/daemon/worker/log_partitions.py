"""The log's partitions and per-minute counts, kept by the lead worker of each daemon: days created ahead, days
past retention dropped, settled minutes counted for the overview's chart, and the rows of workflows kept until
their last step ends.

The log is partitioned by the UTC day its jobs finished (migration 0011). A day is the partition width because
retention is counted in days (7 by default): a week is 8 partitions, few enough that planning a query over all
of them (a job looked up by id) costs nothing, and each a table whose indexes stay in memory. Hourly
partitions would give retention a finer grain, at 24 times as many tables for every such query to open.

Every ``CHECK_EVERY`` seconds one daemon of the fleet (an advisory lock decides) reads the partition bounds and
the server's time, and then:

- creates the partitions of today and the next ``AHEAD_DAYS`` days that are missing, so the hot path never
  meets a missing partition (and were the duty stopped for longer, the default partition takes the rows);
- gives the days that have rows in the default partition a partition of their own, which the rows move into
  (rows older than retention are deleted there instead, in batches);
- drops each partition whose every row is older than retention: no row deleted, nothing left for vacuum. Rows
  are thus kept between ``retention`` and ``retention`` plus one day. The rows of a workflow with a step that
  has not ended (migration 0013) move into the default partition as their day goes, and the deletes there pass
  over them until the round that finds the workflow's last step ended;
- counts the jobs finished in each minute older than ``SETTLE`` into ``log_minutes``, from the B-tree on
  finished_at, at most ``ROLL_MINUTES`` minutes a call: the chart reads those counts and only the last few
  minutes' rows. Counting there rather than on the hot path keeps the workers' flushes independent of each other;
- sweeps the edges, steps and workflows of jobs gone from the jobs table and the log, at most
  ``SWEEP_BATCH`` jobs a call and ``MAX_SWEEP_BATCHES`` calls a round, from the range of job ids that the days
  dropped and the rows deleted left behind: a few index probes per job, never a pass over the log.

Each change takes a lock on the log for a moment; ``LOCK_TIMEOUT`` bounds how long it may wait for one (for a
long read of the log to end), as outcome writes queue behind a waiting DETACH. A change that gives up is tried
again at the next round. A day is detached first and dropped in a transaction of its own, so that no lock on
the log is held while the file system frees its files. The work is done by functions of the schema's owner
(SECURITY DEFINER), so a worker role without DDL rights may run it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from pgqd.daemon.worker.side_connection import SideConnection
from pgqd.identifiers import Names
from pgqd.sql.log_partitions import NOW, TRY_LOCK, UNLOCK, LogPartitionStatements

log = structlog.get_logger("pgqd.daemon.worker.log_partitions")

DAY = 86400.0
AHEAD_DAYS = 3
CHECK_EVERY = 15.0
# A minute is counted once it ended this long ago; outcomes are written milliseconds after their jobs end.
SETTLE = 30.0
ROLL_MINUTES = 60
MAX_ROLLS = 24
TIMEOUT = 60.0
# How long a change may wait for its lock on the log; outcome writes may wait behind it for as long.
LOCK_TIMEOUT = 0.5
PRUNE_BATCH = 10_000
MAX_PRUNE_BATCHES = 10
# Each job swept costs an index probe in the jobs table and in every partition of the log.
SWEEP_BATCH = 5_000
MAX_SWEEP_BATCHES = 10


@dataclass(frozen=True)
class Partition:
    name: str
    lower: float  # epoch seconds; -inf for the partition of everything before the upgrade
    upper: float


@dataclass(frozen=True)
class PartitionPlan:
    """What one round changes: ranges ``[lower, upper)`` to create, partitions to drop, and the time before
    which rows of the default partition are deleted (None: none are)."""

    add: list[tuple[float, float]] = field(default_factory=list)
    drop: list[Partition] = field(default_factory=list)
    prune_default_before: float | None = None


def uncovered(lower: float, upper: float, partitions: Iterable[Partition]) -> list[tuple[float, float]]:
    """The parts of ``[lower, upper)`` that no partition covers."""
    gaps = []
    start = lower
    for p in sorted(partitions, key=lambda p: p.lower):
        if p.upper <= start or p.lower >= upper:
            continue
        if p.lower > start:
            gaps.append((start, p.lower))
        start = max(start, p.upper)
        if start >= upper:
            return gaps
    if start < upper:
        gaps.append((start, upper))
    return gaps


def plan_partitions(
    partitions: Sequence[Partition],
    default_days: Iterable[float],
    now: float,
    retention: float | None,
    ahead_days: int = AHEAD_DAYS,
) -> PartitionPlan:
    """The changes that bring the partitions in line at ``now`` (epoch seconds, UTC days)."""
    cutoff = now - retention if retention else None
    today = math.floor(now / DAY) * DAY
    days = {today + i * DAY for i in range(ahead_days + 1)}
    prune_before = None
    for day in default_days:
        if cutoff is not None and day + DAY <= cutoff:
            prune_before = cutoff  # a whole day past retention: not worth a partition
        else:
            days.add(day)
    add = [gap for day in sorted(days) for gap in uncovered(day, day + DAY, partitions)]
    # Every day past retention goes: the drop moves the rows of workflows still live out of it first.
    drop = [p for p in partitions if cutoff is not None and p.upper <= cutoff]
    return PartitionPlan(add, drop, prune_before)


class LogPartitionUpkeep:
    """Runs ``step`` every ``check_every`` seconds on a connection of its own."""

    def __init__(
        self,
        dsn: str | None,
        names: Names,
        retention: float | None,
        check_every: float = CHECK_EVERY,
        sweep_batch: int = SWEEP_BATCH,
    ) -> None:
        self.sql = LogPartitionStatements(names)
        self.retention = retention
        self.check_every = check_every
        self.sweep_batch = sweep_batch
        self.rounds = 0
        self._side = SideConnection(
            dsn,
            "pgqd-log-partitions",
            TIMEOUT,
            log,
            "log partition upkeep failed; trying again",
            settings={
                "lock_timeout": f"{round(LOCK_TIMEOUT * 1000)}ms",
                "statement_timeout": f"{round(TIMEOUT * 1000)}ms",
            },
        )

    async def turn(self) -> float:
        await self.step()
        return self.check_every

    async def step(self) -> PartitionPlan | None:
        """One round; returns what it planned, or None when another daemon's round runs or the database failed."""
        try:
            conn = await self._side.get()
            if not await conn.fetchval(TRY_LOCK, self.sql.lock_key, timeout=TIMEOUT):
                return None
            try:
                plan = await self._plan(conn)
                await self._apply(conn, plan)
            finally:
                await conn.execute(UNLOCK, self.sql.lock_key, timeout=TIMEOUT)
        except Exception as exc:  # whatever the database or the network does, try again next time
            self._side.failed(exc)
            return None
        if self._side.succeeded():
            log.info("log partition upkeep works again")
        self.rounds += 1
        return plan

    async def _plan(self, conn: Any) -> PartitionPlan:
        rows = await conn.fetch(self.sql.partitions, timeout=TIMEOUT)
        partitions = [Partition(r["name"], r["lower_bound"], r["upper_bound"]) for r in rows]
        days = [r["day"] for r in await conn.fetch(self.sql.default_days, timeout=TIMEOUT)]
        now = await conn.fetchval(NOW, timeout=TIMEOUT)
        return plan_partitions(partitions, days, now, self.retention)

    async def _apply(self, conn: Any, plan: PartitionPlan) -> None:
        for lower, upper in plan.add:
            name = await self._change(conn, self.sql.add_partition, lower, upper)
            if name is not None:
                log.info("created a log partition", partition=name, days=round((upper - lower) / DAY, 3))
        for partition in plan.drop:
            rows = await self._change(conn, self.sql.drop_partition, partition.name, partition.upper)
            if rows is not None:
                log.info("dropped a log partition past retention", partition=partition.name, rows=rows)
        # Out of the log, the tables are dropped with no lock on it: outcome writes do not wait for the files.
        await self._change(conn, self.sql.drop_detached)
        # Minutes are kept a day longer than the rows they count (NULL: as long as the log keeps rows).
        keep = self.retention + DAY if self.retention else None
        await self._batches(conn, MAX_ROLLS, ROLL_MINUTES, self.sql.roll_minutes, SETTLE, ROLL_MINUTES, keep)
        await self._change(conn, self.sql.release_kept)
        if plan.prune_default_before is not None:
            before = plan.prune_default_before
            await self._batches(conn, MAX_PRUNE_BATCHES, PRUNE_BATCH, self.sql.prune_default, before, PRUNE_BATCH)
        await self._batches(conn, MAX_SWEEP_BATCHES, self.sweep_batch, self.sql.sweep_workflows, self.sweep_batch)

    async def _batches(self, conn: Any, calls: int, batch: int, statement: str, *args: Any) -> None:
        """Runs ``statement`` up to ``calls`` times, until one does less than a full ``batch`` of work."""
        for _ in range(calls):
            done = await self._change(conn, statement, *args)
            if done is None or done < batch:
                return

    async def _change(self, conn: Any, statement: str, *args: Any) -> Any:
        """One change in a transaction of its own; None when it gave up waiting for its lock."""
        try:
            return await conn.fetchval(statement, *args, timeout=TIMEOUT)
        except asyncpg.LockNotAvailableError:
            log.info("a log partition change waited too long for its lock; trying again next round")
            return None

    def close(self) -> None:
        self._side.close()
