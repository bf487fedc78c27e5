"""The rows of the in-memory backend: live jobs, finished jobs, workers and token buckets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pgqd.models import ErrorInfo, FinalStatus, LiveStatus, NewJob, WorkerInfo


@dataclass(slots=True)
class JobRow:
    id: int
    entrypoint: str
    payload: bytes | None
    headers: str | None
    priority: int
    status: LiveStatus
    execute_after: datetime
    dedupe_key: str | None
    created_at: datetime
    attempts: int = 0
    picked_at: datetime | None = None
    worker_id: int | None = None
    cancel_requested: bool = False
    notify_finished: bool = False
    last_error: ErrorInfo | None = None
    # Worker deaths this job was present in, and those charged to it (it ran alone); isolated and the death
    # budget stamped by an isolated claim (see rescue_worker).
    deaths: int = 0
    lost_runs: int = 0
    isolated: bool = False
    max_deaths: int | None = None
    hold_failures: bool = False
    # Workflows: parents not ended yet (while waiting), whether some job waits for this one, and the policy
    # when a parent fails (None: cancel).
    waiting_on: int = 0
    has_dependents: bool = False
    on_parent_failure: str | None = None
    # Bumped on every change of status; heap entries carrying an older version are stale and skipped.
    version: int = 0


def new_row(job_id: int, new: NewJob, now: datetime) -> JobRow:
    """The row of a job just enqueued, due at its ``execute_after`` or after its delay (status set by the caller)."""
    return JobRow(
        id=job_id,
        entrypoint=new.entrypoint,
        payload=new.payload,
        headers=new.headers,
        priority=new.priority,
        status="queued",
        execute_after=new.execute_after or (now + timedelta(seconds=new.delay)),
        dedupe_key=new.dedupe_key,
        created_at=now,
    )


@dataclass(slots=True)
class LogRow:
    job_id: int
    entrypoint: str
    priority: int
    status: FinalStatus
    attempts: int
    created_at: datetime
    finished_at: datetime
    started_at: datetime | None = None
    worker_id: int | None = None
    error: ErrorInfo | None = None
    result: Any = None
    payload: bytes | None = None


@dataclass(slots=True)
class WorkerRow:
    info: WorkerInfo
    heartbeat_at: float


@dataclass(slots=True)
class Bucket:
    tokens: float
    refilled_at: float
