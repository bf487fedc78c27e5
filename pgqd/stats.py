"""Read-only views of a queue for operators: depth and age, throughput, workers, job listings.

Used by ``pgqd dashboard``, ``pgqd jobs`` and the supervisor's database-derived metrics. Each is one query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgqd.identifiers import Names
from pgqd.models import FINAL_STATUSES
from pgqd.sql import render

# Eligible means it could run now: queued, or deferred and due. A full pass over the live table, so callers
# cache the result for a few seconds rather than run it per scrape.
QUEUE_DEPTH = """
SELECT j.entrypoint, j.status::text AS status, count(*) AS jobs,
       extract(epoch FROM now() - min(j.execute_after)
           FILTER (WHERE j.status = 'queued' OR (j.status = 'deferred' AND j.execute_after <= now()))) AS oldest_age
FROM {jobs} AS j
GROUP BY 1, 2
ORDER BY 1, 2
"""

# The log's block-range index on finished_at keeps this to the last few minutes' pages.
THROUGHPUT = """
SELECT l.entrypoint, l.status::text AS status,
       count(*) FILTER (WHERE l.finished_at > now() - interval '1 minute') AS last_1m,
       count(*) AS last_5m
FROM {log} AS l
WHERE l.finished_at > now() - interval '5 minutes'
GROUP BY 1, 2
ORDER BY 1, 2
"""

WORKERS = """
SELECT w.id, w.host, w.pid, w.entrypoints, w.started_at, w.heartbeat_at,
       extract(epoch FROM now() - w.heartbeat_at) AS silent_for,
       (SELECT count(*) FROM {jobs} AS j WHERE j.worker_id = w.id AND j.status = 'picked') AS running
FROM {workers} AS w
ORDER BY w.host, w.pid
"""

LIST_LIVE_JOBS = """
SELECT j.id, j.entrypoint, j.status::text AS status, j.priority, j.attempts, j.created_at, j.execute_after,
       j.picked_at, j.worker_id, j.dedupe_key, j.last_error->>'type' AS error_type,
       j.last_error->>'message' AS error_message
FROM {jobs} AS j
WHERE ($1::text IS NULL OR j.entrypoint = $1) AND ($2::text IS NULL OR j.status::text = $2)
ORDER BY j.id
LIMIT $3
"""

LIST_FINISHED_JOBS = """
SELECT l.job_id AS id, l.entrypoint, l.status::text AS status, l.priority, l.attempts, l.created_at,
       l.started_at, l.finished_at, l.worker_id, l.dedupe_key, l.error_type, l.error_message
FROM {log} AS l
WHERE ($1::text IS NULL OR l.entrypoint = $1) AND l.status::text = $2
ORDER BY l.finished_at DESC
LIMIT $3
"""

HELD_JOB_IDS = """
SELECT array_agg(j.id ORDER BY j.id) FROM {jobs} AS j
WHERE j.status = 'failed' AND ($1::text IS NULL OR j.entrypoint = $1)
"""


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
    """The queries above, for one install, on an asyncpg connection or pool."""

    def __init__(self, db: Any, names: Names) -> None:
        self.db = db
        self.names = names

    async def depth(self) -> list[Depth]:
        rows = await self.db.fetch(render(QUEUE_DEPTH, self.names))
        return [Depth(r["entrypoint"], r["status"], r["jobs"], _float(r["oldest_age"])) for r in rows]

    async def throughput(self) -> list[Throughput]:
        rows = await self.db.fetch(render(THROUGHPUT, self.names))
        return [Throughput(r["entrypoint"], r["status"], r["last_1m"], r["last_5m"]) for r in rows]

    async def workers(self) -> list[WorkerRow]:
        rows = await self.db.fetch(render(WORKERS, self.names))
        return [WorkerRow(**{**dict(r), "entrypoints": list(r["entrypoints"]), "silent_for": float(r["silent_for"])})
                for r in rows]  # fmt: skip

    async def jobs(self, entrypoint: str | None, status: str | None, limit: int) -> list[dict[str, Any]]:
        if status in FINAL_STATUSES:
            rows = await self.db.fetch(render(LIST_FINISHED_JOBS, self.names), entrypoint, status, limit)
        else:
            rows = await self.db.fetch(render(LIST_LIVE_JOBS, self.names), entrypoint, status, limit)
        return [dict(r) for r in rows]

    async def held_ids(self, entrypoint: str | None) -> list[int]:
        ids = await self.db.fetchval(render(HELD_JOB_IDS, self.names), entrypoint)
        return list(ids or [])


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
