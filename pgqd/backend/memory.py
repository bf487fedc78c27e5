"""The in-memory adapter of the storage port: the PostgreSQL semantics without a database.

For users' unit tests and for running examples offline. It lives in one process and one event loop; the
behavioural test suite runs against it and against PostgreSQL alike, so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pgqd.backend.base import EventCallback
from pgqd.errors import DedupeConflict
from pgqd.models import (
    PAUSE_ALL,
    CancelResult,
    ClaimedJob,
    ClaimResult,
    EntrypointLimit,
    ErrorInfo,
    Event,
    FinalStatus,
    Finished,
    JobState,
    LiveStatus,
    NewJob,
    OnConflict,
    Outcome,
    PauseState,
    ScheduleDefinition,
    ScheduleState,
    WorkerInfo,
)


@dataclass(slots=True)
class _Job:
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
    lost_runs: int = 0
    # Bumped on every change of status; heap entries carrying an older version are stale and skipped.
    version: int = 0


@dataclass(slots=True)
class _LogRow:
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


@dataclass(slots=True)
class _Worker:
    info: WorkerInfo
    heartbeat_at: float


@dataclass(slots=True)
class _Bucket:
    tokens: float
    refilled_at: float


@dataclass(slots=True)
class _Subscription:
    backend: MemoryBackend
    callback: EventCallback
    loop: asyncio.AbstractEventLoop
    closed: bool = field(default=False)

    async def close(self) -> None:
        self.closed = True
        if self in self.backend._subscriptions:
            self.backend._subscriptions.remove(self)


class MemoryBackend:
    """Jobs, log, workers and limits held in dictionaries and heaps of one process.

    ``clock`` returns seconds since the epoch (``time.time`` by default); tests may pass their own.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._ids = itertools.count(1)
        self._worker_ids = itertools.count(1)
        self.jobs: dict[int, _Job] = {}
        self.log: dict[int, _LogRow] = {}
        self._workers: dict[int, _Worker] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._dedupe: dict[str, int] = {}
        self._ready: dict[str, list[tuple[int, int, int, int]]] = {}
        self._deferred: dict[str, list[tuple[float, int, int]]] = {}
        self._subscriptions: list[_Subscription] = []
        self._schedules: dict[str, ScheduleState] = {}
        self._pauses: dict[str, bool] = {}

    # --- time and events ----------------------------------------------------------------------------------
    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _emit(self, event: Event) -> None:
        for sub in list(self._subscriptions):
            if not sub.closed:
                sub.loop.call_soon(sub.callback, event)

    async def subscribe(self, callback: EventCallback) -> _Subscription:
        sub = _Subscription(self, callback, asyncio.get_running_loop())
        self._subscriptions.append(sub)
        return sub

    # --- index upkeep -------------------------------------------------------------------------------------
    def _set_status(self, job: _Job, status: LiveStatus) -> None:
        job.status = status
        job.version += 1
        if status == "queued":
            heapq.heappush(self._ready.setdefault(job.entrypoint, []), (-job.priority, job.id, job.id, job.version))
        elif status == "deferred":
            heapq.heappush(
                self._deferred.setdefault(job.entrypoint, []),
                (job.execute_after.timestamp(), job.id, job.version),
            )

    def _remove(self, job: _Job) -> None:
        del self.jobs[job.id]
        job.version += 1
        if job.dedupe_key is not None and self._dedupe.get(job.dedupe_key) == job.id:
            del self._dedupe[job.dedupe_key]

    def _log(self, job: _Job, status: FinalStatus, **fields: Any) -> None:
        self.log[job.id] = _LogRow(
            job_id=job.id,
            entrypoint=job.entrypoint,
            priority=job.priority,
            status=status,
            attempts=job.attempts,
            created_at=job.created_at,
            finished_at=fields.pop("finished_at", self._now()),
            **fields,
        )

    # --- producers and operators ---------------------------------------------------------------------------
    async def enqueue(self, jobs: Sequence[NewJob], on_conflict: OnConflict) -> list[int | None]:
        if not jobs:
            return []
        conflicts = [j.dedupe_key for j in jobs if j.dedupe_key is not None and j.dedupe_key in self._dedupe]
        if conflicts and on_conflict == "raise":
            raise DedupeConflict([k for k in conflicts if k is not None])
        now = self._now()
        ids: list[int | None] = []
        for new in jobs:
            if new.dedupe_key is not None and new.dedupe_key in self._dedupe:
                existing = self.jobs[self._dedupe[new.dedupe_key]]
                if on_conflict == "skip":
                    ids.append(None)
                    continue
                if new.priority > existing.priority:
                    existing.priority = new.priority
                    if existing.status == "queued":
                        self._set_status(existing, "queued")
                ids.append(existing.id)
                continue
            due = new.execute_after or (now + timedelta(seconds=new.delay))
            job = _Job(
                id=next(self._ids),
                entrypoint=new.entrypoint,
                payload=new.payload,
                headers=new.headers,
                priority=new.priority,
                status="queued",
                execute_after=due,
                dedupe_key=new.dedupe_key,
                created_at=now,
            )
            self.jobs[job.id] = job
            if job.dedupe_key is not None:
                self._dedupe[job.dedupe_key] = job.id
            self._set_status(job, "deferred" if due > now else "queued")
            ids.append(job.id)
        delays = [max((j.execute_after or now + timedelta(seconds=j.delay)) - now, timedelta(0)) for j in jobs]
        due_in = min(delays).total_seconds() if all(d > timedelta(0) for d in delays) else None
        self._emit(Event("enqueued", tuple(sorted({j.entrypoint for j in jobs})), due_in=due_in))
        return ids

    async def cancel(self, ids: Sequence[int], status: FinalStatus = "canceled") -> CancelResult:
        canceled: list[int] = []
        signalled: list[int] = []
        finished_watched: list[int] = []
        for job_id in dict.fromkeys(ids):
            job = self.jobs.get(job_id)
            if job is None:
                continue
            if job.status == "picked":
                job.cancel_requested = True
                signalled.append(job_id)
                continue
            self._remove(job)
            self._log(job, status, error=job.last_error)
            canceled.append(job_id)
            if job.notify_finished:
                finished_watched.append(job_id)
        if finished_watched:
            self._emit(Event("finished", ids=tuple(finished_watched)))
        if signalled:
            self._emit(Event("cancel", ids=tuple(signalled)))
        return CancelResult(canceled=canceled, signalled=signalled)

    async def requeue(self, ids: Sequence[int]) -> list[int]:
        held = [self.jobs[i] for i in dict.fromkeys(ids) if i in self.jobs and self.jobs[i].status == "failed"]
        taken = [j.dedupe_key for j in held if j.dedupe_key is not None and j.dedupe_key in self._dedupe]
        if taken:
            raise DedupeConflict([k for k in taken if k is not None])
        now = self._now()
        for job in held:
            job.attempts = 0
            job.lost_runs = 0
            job.execute_after = now
            if job.dedupe_key is not None:
                self._dedupe[job.dedupe_key] = job.id
            self._set_status(job, "queued")
        if held:
            self._emit(Event("enqueued", tuple(sorted({j.entrypoint for j in held}))))
        return sorted(j.id for j in held)

    async def job_states(self, ids: Sequence[int]) -> dict[int, JobState]:
        states: dict[int, JobState] = {}
        for job_id in ids:
            if job_id in self.jobs:
                job = self.jobs[job_id]
                states[job_id] = JobState(
                    job.id,
                    job.entrypoint,
                    job.status,
                    job.attempts,
                    job.priority,
                    job.created_at,
                    error=job.last_error,
                )
            elif job_id in self.log:
                row = self.log[job_id]
                states[job_id] = JobState(
                    row.job_id,
                    row.entrypoint,
                    row.status,
                    row.attempts,
                    row.priority,
                    row.created_at,
                    finished_at=row.finished_at,
                    error=row.error,
                    result=row.result,
                )
        return states

    async def watch_finished(self, job_id: int) -> bool:
        job = self.jobs.get(job_id)
        if job is None:
            return False
        job.notify_finished = True
        return True

    async def pause(self, entrypoints: Sequence[str] | None) -> None:
        if entrypoints is None:
            self._pauses = {PAUSE_ALL: True}
        else:
            self._pauses.update(dict.fromkeys(entrypoints, True))

    async def resume(self, entrypoints: Sequence[str] | None) -> None:
        if entrypoints is None:
            self._pauses.clear()
        elif PAUSE_ALL in self._pauses:
            self._pauses.update(dict.fromkeys(entrypoints, False))
        else:
            for name in entrypoints:
                self._pauses.pop(name, None)
        self._emit(Event("enqueued", tuple(sorted(set(entrypoints or ())))))

    async def pauses(self) -> PauseState:
        return PauseState.from_rows(self._pauses.items())

    # --- workers ------------------------------------------------------------------------------------------
    async def register_worker(self, info: WorkerInfo) -> int:
        worker_id = next(self._worker_ids)
        self._workers[worker_id] = _Worker(info, self._clock())
        return worker_id

    async def heartbeat(self, worker_id: int, info: WorkerInfo) -> list[int]:
        worker = self._workers.get(worker_id)
        if worker is None:
            self._workers[worker_id] = _Worker(info, self._clock())
        else:
            worker.heartbeat_at = self._clock()
        return [
            j.id for j in self.jobs.values() if j.worker_id == worker_id and j.status == "picked" and j.cancel_requested
        ]

    async def deregister_worker(self, worker_id: int) -> None:
        self._workers.pop(worker_id, None)

    def _allowance(self, limit: EntrypointLimit, batch: int, now: float) -> int:
        allow = batch
        if limit.concurrency > 0:
            running = sum(1 for j in self.jobs.values() if j.status == "picked" and j.entrypoint == limit.name)
            allow = min(allow, max(limit.concurrency - running, 0))
        if limit.rate_per_second > 0:
            allow = min(allow, math.floor(self._refilled(limit, now)))
        return allow

    def _refilled(self, limit: EntrypointLimit, now: float) -> float:
        bucket = self._buckets.setdefault(limit.name, _Bucket(limit.burst, now))
        return min(limit.burst, bucket.tokens + limit.rate_per_second * (now - bucket.refilled_at))

    def _candidates(self, entrypoint: str, allow: int, now: float) -> list[_Job]:
        """Up to ``allow`` eligible jobs of one entrypoint: the ready head plus deferred jobs now due."""
        found: list[_Job] = []
        ready = self._ready.get(entrypoint, [])
        while ready and len(found) < allow:
            _, _, job_id, version = heapq.heappop(ready)
            job = self.jobs.get(job_id)
            if job is not None and job.version == version and job.status == "queued":
                found.append(job)
        due: list[_Job] = []
        deferred = self._deferred.get(entrypoint, [])
        while deferred and deferred[0][0] <= now and len(due) < allow:
            _, job_id, version = heapq.heappop(deferred)
            job = self.jobs.get(job_id)
            if job is not None and job.version == version and job.status == "deferred":
                due.append(job)
        merged = sorted(found + due, key=lambda j: (-j.priority, j.id))
        # What is not taken goes back on its heap untouched.
        for job in merged[allow:]:
            self._set_status(job, job.status)
        return merged[:allow]

    async def claim(self, worker_id: int, batch: int, limits: Sequence[EntrypointLimit]) -> ClaimResult:
        if self._pauses:
            paused = PauseState.from_rows(self._pauses.items())
            limits = [limit for limit in limits if not paused.is_paused(limit.name)]
        now = self._clock()
        picked_at = datetime.fromtimestamp(now, UTC)
        pool: list[_Job] = []
        for limit in limits:
            allow = self._allowance(limit, batch, now)
            if allow > 0:
                pool.extend(self._candidates(limit.name, allow, now))
        pool.sort(key=lambda j: (-j.priority, j.id))
        taken, spare = pool[:batch], pool[batch:]
        for job in spare:
            self._set_status(job, job.status)
        claimed: list[ClaimedJob] = []
        for job in taken:
            self._set_status(job, "picked")
            job.picked_at = picked_at
            job.worker_id = worker_id
            job.attempts += 1
            claimed.append(
                ClaimedJob(
                    job.id,
                    job.entrypoint,
                    job.payload,
                    job.headers,
                    job.priority,
                    job.attempts,
                    job.created_at,
                    job.execute_after,
                    picked_at,
                    job.cancel_requested,
                    job.lost_runs,
                )
            )
        by_limit = {limit.name: limit for limit in limits}
        for name in {job.entrypoint for job in taken}:
            limit = by_limit[name]
            if limit.rate_per_second > 0:
                spent = sum(1 for job in taken if job.entrypoint == name)
                self._buckets[name] = _Bucket(self._refilled(limit, now) - spent, now)
        due_in = self._next_due_in(limits, now) if len(claimed) < batch else None
        return ClaimResult(claimed, self._throttled_in(limits, now), due_in)

    def _throttled_in(self, limits: Sequence[EntrypointLimit], now: float) -> float | None:
        hints: list[float] = []
        for limit in limits:
            if limit.rate_per_second > 0:
                tokens = self._refilled(limit, now)
                if tokens < 1 and self._has_eligible(limit.name, now):
                    hints.append((1 - tokens) / limit.rate_per_second)
        return min(hints, default=None)

    def _next_due_in(self, limits: Sequence[EntrypointLimit], now: float) -> float | None:
        hints: list[float] = []
        for limit in limits:
            deferred = self._deferred.get(limit.name, [])
            while deferred:
                due, job_id, version = deferred[0]
                job = self.jobs.get(job_id)
                if job is not None and job.version == version and job.status == "deferred":
                    hints.append(max(due - now, 0.0))
                    break
                heapq.heappop(deferred)
        return min(hints, default=None)

    def _has_eligible(self, entrypoint: str, now: float) -> bool:
        return any(
            j.entrypoint == entrypoint
            and (j.status == "queued" or (j.status == "deferred" and j.execute_after.timestamp() <= now))
            for j in self.jobs.values()
        )

    async def record(self, worker_id: int, outcomes: Sequence[Outcome], slot_entrypoints: Sequence[str]) -> int:
        applied = 0
        finished_watched: list[int] = []
        slots: set[str] = set()
        requeued: dict[str, list[float]] = {}
        for outcome in outcomes:
            job = self.jobs.get(outcome.job_id)
            if job is None or job.worker_id != worker_id or job.status != "picked" or job.picked_at is None:
                continue
            applied += 1
            if job.entrypoint in slot_entrypoints:
                slots.add(job.entrypoint)
            if isinstance(outcome, Finished):
                self._remove(job)
                started = job.picked_at + timedelta(seconds=outcome.started_after)
                self._log(
                    job,
                    outcome.status,
                    started_at=started,
                    finished_at=started + timedelta(seconds=outcome.duration),
                    worker_id=worker_id,
                    error=outcome.error,
                    result=None if outcome.result_json is None else json.loads(outcome.result_json),
                )
                if job.notify_finished:
                    finished_watched.append(job.id)
                continue
            job.worker_id = None
            job.picked_at = None
            if outcome.error is not None:
                job.last_error = outcome.error
            if outcome.kind == "hold":
                self._set_status(job, "failed")
                if job.dedupe_key is not None and self._dedupe.get(job.dedupe_key) == job.id:
                    del self._dedupe[job.dedupe_key]
                if job.notify_finished:
                    finished_watched.append(job.id)
                continue
            if outcome.kind == "release":
                job.attempts = max(job.attempts - 1, 0)
                self._set_status(job, "queued")
                requeued.setdefault(job.entrypoint, []).append(0.0)
            else:
                job.execute_after = self._now() + timedelta(seconds=outcome.delay)
                self._set_status(job, "deferred" if outcome.delay > 0 else "queued")
                requeued.setdefault(job.entrypoint, []).append(outcome.delay)
        if finished_watched:
            self._emit(Event("finished", ids=tuple(finished_watched)))
        if slots:
            self._emit(Event("slot", tuple(sorted(slots))))
        if requeued:
            delays = [d for ds in requeued.values() for d in ds]
            due_in = min(delays) if all(d > 0 for d in delays) else None
            self._emit(Event("enqueued", tuple(sorted(requeued)), due_in=due_in))
        return applied

    def _requeue_picked(self, jobs: list[_Job], *, count_attempt: bool) -> list[int]:
        for job in jobs:
            job.worker_id = None
            job.picked_at = None
            if count_attempt:
                job.lost_runs += 1
            else:
                job.attempts = max(job.attempts - 1, 0)
            self._set_status(job, "queued")
        if jobs:
            self._emit(Event("enqueued", tuple(sorted({j.entrypoint for j in jobs}))))
        return [j.id for j in jobs]

    async def release_stray(self, worker_id: int, keep: Sequence[int]) -> list[int]:
        kept = set(keep)
        stray = [
            j for j in self.jobs.values() if j.worker_id == worker_id and j.status == "picked" and j.id not in kept
        ]
        return self._requeue_picked(stray, count_attempt=False)

    async def rescue_stale(self, worker_timeout: float) -> list[int]:
        now = self._clock()
        stale = {wid for wid, w in self._workers.items() if w.heartbeat_at < now - worker_timeout}
        for wid in stale:
            del self._workers[wid]
        orphaned = [
            j
            for j in self.jobs.values()
            if j.status == "picked"
            and (
                j.worker_id in stale
                or (
                    j.worker_id not in self._workers
                    and j.picked_at is not None
                    and j.picked_at.timestamp() < now - worker_timeout
                )
            )
        ]
        return self._requeue_picked(orphaned, count_attempt=True)

    async def rescue_worker(self, worker_id: int) -> list[int]:
        self._workers.pop(worker_id, None)
        owned = [j for j in self.jobs.values() if j.worker_id == worker_id and j.status == "picked"]
        return self._requeue_picked(owned, count_attempt=True)

    async def prune_log(self, older_than: float, limit: int) -> int:
        cutoff = self._now() - timedelta(seconds=older_than)
        old = [job_id for job_id, row in self.log.items() if row.finished_at < cutoff][:limit]
        for job_id in old:
            del self.log[job_id]
        return len(old)

    # --- schedules ----------------------------------------------------------------------------------------
    async def sync_schedules(self, schedules: Sequence[ScheduleDefinition]) -> None:
        wanted = {d.spec.name: d for d in schedules}
        for name in [n for n in self._schedules if n not in wanted]:
            del self._schedules[name]
        for name, definition in wanted.items():
            new, old = definition.spec, self._schedules.get(name)
            # A changed cron or zone, or a re-enabled schedule, starts from its next tick; otherwise it keeps its own.
            keep = (
                old is not None
                and (old.cron, old.timezone) == (new.cron, new.timezone)
                and not (new.enabled and not old.enabled)
            )
            self._schedules[name] = ScheduleState(
                **asdict(new),
                next_run=old.next_run if keep and old is not None else definition.first_run,
                last_run=old.last_run if old is not None else None,
                last_job_id=old.last_job_id if old is not None else None,
                last_status=None,
            )

    async def schedule_states(self) -> list[ScheduleState]:
        states = []
        for name in sorted(self._schedules):
            state = self._schedules[name]
            last = None
            if state.last_job_id is not None:
                found = (await self.job_states([state.last_job_id])).get(state.last_job_id)
                last = found.status if found else None
            states.append(replace(state, last_status=last))
        return states

    async def fire_schedule(
        self, name: str, due: datetime, next_run: datetime, jobs: Sequence[NewJob]
    ) -> list[int] | None:
        state = self._schedules.get(name)
        if state is None or state.next_run != due:
            return None
        ids = [i for i in await self.enqueue(jobs, "raise") if i is not None] if jobs else []
        self._schedules[name] = replace(
            state,
            next_run=next_run,
            last_run=due if jobs else state.last_run,
            last_job_id=max(ids) if ids else state.last_job_id,
        )
        return ids

    async def close(self) -> None:
        for sub in list(self._subscriptions):
            await sub.close()
