"""The rows of the in-memory backend: live jobs, finished jobs, workers and token buckets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgqd.models import ErrorInfo, FinalStatus, LiveStatus, WorkerInfo


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
    # Bumped on every change of status; heap entries carrying an older version are stale and skipped.
    version: int = 0


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
