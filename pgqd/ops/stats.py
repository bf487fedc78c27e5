"""The read side of a queue, in one place: what ``pgqd dashboard``, ``pgqd jobs``, the web UI, the MCP tools and
the queue gauges of ``/metrics`` show. Each method is one query (SQL in ``pgqd.sql.stats``).

``QueueStats`` runs on an asyncpg connection or pool. It only reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgqd.identifiers import Names
from pgqd.models import FINAL_STATUSES, PauseState, ScheduleState
from pgqd.sql import render
from pgqd.sql.statements import SCHEDULE_STATES
from pgqd.sql.stats import WITHOUT_JIT, StatsStatements

# Server settings for the connections of the read side (web UI, MCP tools). Its statements take their filters as
# parameters that are often NULL ("no time bound"), and the log is partitioned by time: a plan made for the
# parameters at hand reads the right partitions and walks the job-id indexes, while PostgreSQL's generic plan,
# which a prepared statement switches to after five runs, cannot tell and sorts every row of the log (2 s
# instead of 80 ms for a search at a million log rows). Planning each run costs about a millisecond.
READ_SIDE_SETTINGS = {"plan_cache_mode": "force_custom_plan", "jit": "off"}


@dataclass(frozen=True)
class QueueSummary:
    """One entrypoint's live jobs. ``running`` is status picked, ``held`` status failed. Ages are in seconds:
    how long the longest-waiting queued job, and the longest-overdue deferred one, have been eligible."""

    entrypoint: str
    queued: int
    deferred: int
    running: int
    held: int
    oldest_queued_age: float | None
    oldest_due_age: float | None
    paused: bool
    # Jobs present in two worker deaths, waiting to run alone (docs/reliability.md, "When a worker dies").
    suspects: int = 0
    # Jobs waiting for their parents to end (docs/workflows.md).
    waiting: int = 0

    @property
    def oldest_eligible_age(self) -> float | None:
        ages = [a for a in (self.oldest_queued_age, self.oldest_due_age) if a is not None]
        return max(ages, default=None)


@dataclass(frozen=True)
class Depth:
    entrypoint: str
    status: str
    jobs: int
    oldest_age: float | None


@dataclass(frozen=True)
class Throughput:
    entrypoint: str
    status: str
    last_1m: int
    last_5m: int


@dataclass(frozen=True)
class ThroughputBucket:
    """Jobs of one entrypoint that finished in ``[start, start + bucket seconds)``; ``failed`` counts exceptions
    and timeouts, ``other`` cancellations and deletions."""

    start: datetime
    entrypoint: str
    succeeded: int
    failed: int
    other: int


@dataclass(frozen=True)
class HeldJob:
    id: int
    entrypoint: str
    priority: int
    attempts: int
    created_at: datetime
    execute_after: datetime
    dedupe_key: str | None
    error_type: str | None
    error_message: str | None


@dataclass(frozen=True)
class FailedRun:
    """A run that ended in an exception or a timeout (from the log)."""

    id: int
    entrypoint: str
    status: str
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime
    error_type: str | None
    error_message: str | None


@dataclass(frozen=True)
class JobDetail:
    """One job, live or finished. Finished jobs have no headers, a payload only if their entrypoint keeps
    payloads (``keep_payload``), and may have a result; ``error_*`` is the last error of a live job, or the
    final one of a finished job."""

    id: int
    entrypoint: str
    status: str
    priority: int
    attempts: int
    payload: bytes | None
    headers: dict[str, Any] | None
    dedupe_key: str | None
    created_at: datetime
    execute_after: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker_id: int | None
    cancel_requested: bool
    lost_runs: int
    error_type: str | None
    error_message: str | None
    error_traceback: str | None
    result: Any
    # Failed attempts that were retried or held, oldest first ({type, message, traceback, attempt, at}); for a
    # finished job, the ones before its final error.
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


@dataclass(frozen=True)
class WorkerRow:
    id: int
    host: str
    pid: int
    entrypoints: list[str]
    started_at: datetime
    heartbeat_at: datetime
    silent_for: float
    running: int


class QueueStats:
    """The read-side queries for one install, on an asyncpg connection or pool.

    ``read_side``: its connections were opened with ``READ_SIDE_SETTINGS`` (pgqd's own: the web UI's, the MCP
    server's, a command's). Each query then goes alone, in one round trip. On anyone else's, it goes in a
    transaction of its own that first turns JIT off: three more round trips, and on a server that stopped
    answering, the rollback of that transaction waits out a second timeout after the query's."""

    def __init__(self, db: Any, names: Names, *, read_side: bool = False) -> None:
        self.db = db
        self.names = names
        self.read_side = read_side
        self.sql = StatsStatements(names)
        self._schedule_states = render(SCHEDULE_STATES, names)

    async def _fetch(self, statement: str, *args: Any) -> list[Any]:
        if self.read_side:
            rows: list[Any] = await self.db.fetch(statement, *args)
            return rows
        if hasattr(self.db, "acquire"):
            async with self.db.acquire() as conn:
                return await _fetch_without_jit(conn, statement, args)
        return await _fetch_without_jit(self.db, statement, args)

    async def queues(self, count_limit: int | None = None) -> list[QueueSummary]:
        """Every entrypoint with live jobs, a running worker or a pause, by name. ``count_limit`` caps each count
        (a count stops there; exact when None): an exact count of a million queued jobs takes ~100 ms."""
        rows = await self._fetch(self.sql.queues, count_limit)
        return [
            QueueSummary(
                r["entrypoint"],
                r["queued"],
                r["deferred"],
                r["running"],
                r["held"],
                _float(r["oldest_queued_age"]),
                _float(r["oldest_due_age"]),
                r["paused"],
                r["suspects"],
                r["waiting"],
            )
            for r in rows
        ]

    async def depth(self) -> list[Depth]:
        """Exact job counts per entrypoint and live status (statuses with no job left out), for the gauges."""
        return depth_rows(await self.queues())

    async def pauses(self) -> PauseState:
        """What is paused: every entrypoint (``pause --all``) and the exceptions, or the ones named."""
        rows = await self._fetch(self.sql.pauses)
        return PauseState.from_rows((r["entrypoint"], r["paused"]) for r in rows)

    async def throughput(self) -> list[Throughput]:
        rows = await self._fetch(self.sql.throughput)
        return [Throughput(r["entrypoint"], r["status"], r["last_1m"], r["last_5m"]) for r in rows]

    async def throughput_series(
        self, window: float = 3600.0, bucket: float = 60.0, entrypoint: str | None = None
    ) -> list[ThroughputBucket]:
        """Finished jobs per entrypoint in ``bucket``-second slices of the last ``window`` seconds (empty slices
        are left out), oldest first."""
        if window <= 0 or bucket <= 0:
            raise ValueError("window and bucket must be positive")
        rows = await self._fetch(self.sql.throughput_series, float(window), float(bucket), entrypoint)
        return [
            ThroughputBucket(r["bucket_start"], r["entrypoint"], r["succeeded"], r["failed"], r["other"]) for r in rows
        ]

    async def held_jobs(
        self, entrypoint: str | None = None, *, after_id: int | None = None, limit: int = 50
    ) -> list[HeldJob]:
        """Held (failed) jobs in id order, ``limit`` at a time; pass the last id seen as ``after_id`` for more."""
        rows = await self._fetch(self.sql.held_jobs, entrypoint, after_id, limit)
        return [HeldJob(**dict(r)) for r in rows]

    async def recent_failures(
        self, window: float = 3600.0, entrypoint: str | None = None, limit: int = 50
    ) -> list[FailedRun]:
        """Runs that ended in an exception or a timeout in the last ``window`` seconds, newest first."""
        rows = await self._fetch(self.sql.recent_failures, float(window), entrypoint, limit)
        return [FailedRun(**dict(r)) for r in rows]

    async def job(self, job_id: int) -> JobDetail | None:
        """One job by id, live or finished; None if it is unknown (or pruned from the log)."""
        rows = await self._fetch(self.sql.job_detail, job_id)
        if not rows:
            return None
        row = dict(rows[0])
        row["headers"] = None if row["headers"] is None else json.loads(row["headers"])
        row["result"] = None if row["result"] is None else json.loads(row["result"])
        row["errors"] = [] if row["errors"] is None else json.loads(row["errors"])
        return JobDetail(**row)

    async def workers(self) -> list[WorkerRow]:
        rows = await self._fetch(self.sql.workers)
        return [WorkerRow(**{**dict(r), "entrypoints": list(r["entrypoints"]), "silent_for": float(r["silent_for"])})
                for r in rows]  # fmt: skip

    async def schedules(self) -> list[ScheduleState]:
        rows = await self._fetch(self._schedule_states)
        return [ScheduleState(*row) for row in rows]

    async def jobs(self, entrypoint: str | None, status: str | None, limit: int) -> list[dict[str, Any]]:
        if status in FINAL_STATUSES:
            rows = await self._fetch(self.sql.list_finished_jobs, entrypoint, status, limit)
        else:
            rows = await self._fetch(self.sql.list_live_jobs, entrypoint, status, limit)
        return [dict(r) for r in rows]

    async def held_ids(self, entrypoint: str | None) -> list[int]:
        rows = await self._fetch(self.sql.held_job_ids, entrypoint)
        return list(rows[0][0] or [])


def depth_rows(summaries: Sequence[QueueSummary]) -> list[Depth]:
    """Summaries as rows per entrypoint and live status, with the age of the jobs eligible in each."""
    rows = []
    for s in summaries:
        for status, jobs, age in (
            ("deferred", s.deferred, s.oldest_due_age),
            ("failed", s.held, None),
            ("picked", s.running, None),
            ("queued", s.queued, s.oldest_queued_age),
            ("suspect", s.suspects, None),
            ("waiting", s.waiting, None),
        ):
            if jobs:
                rows.append(Depth(s.entrypoint, status, jobs, age))
    return rows


async def _fetch_without_jit(conn: Any, statement: str, args: Sequence[Any]) -> list[Any]:
    """Runs one read-side query with JIT compilation off (see ``WITHOUT_JIT``)."""
    rows: list[Any]
    if conn.is_in_transaction():
        # The caller's transaction: the setting lasts until it ends, which changes nothing but plans' speed.
        await conn.execute(WITHOUT_JIT)
        rows = await conn.fetch(statement, *args)
        return rows
    async with conn.transaction(readonly=True):
        await conn.execute(WITHOUT_JIT)
        rows = await conn.fetch(statement, *args)
        return rows


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
