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
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pgqd.backend.base import EventCallback
from pgqd.backend.clock import Clock, ManualClock
from pgqd.backend.memory_rows import Bucket, JobRow, LogRow, WorkerRow, new_row
from pgqd.backend.memory_workflows import Ended, MemoryWorkflows
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
    HandOver,
    HeartbeatReply,
    JobState,
    LiveStatus,
    NewJob,
    OnConflict,
    Outcome,
    PauseState,
    Recorded,
    ScheduleDefinition,
    ScheduleState,
    WorkerInfo,
)


def _kept_beyond_outcomes(job: JobRow) -> bytes | None:
    """The payload a cancel or a give-up keeps in the log: a Django task's, as the PostgreSQL backend does."""
    return job.payload if job.entrypoint.startswith("django.") else None


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


class MemoryBackend(MemoryWorkflows):
    """Jobs, log, workers and limits held in dictionaries and heaps of one process.

    ``clock`` returns seconds since the epoch (``time.time`` by default). Tests of your own handlers may pass a
    ``ManualClock`` and move time forward with its ``advance``; ``finished()`` lists the jobs that ended and how,
    and ``reset()`` empties the backend between tests.
    """

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        if isinstance(clock, ManualClock):
            clock.on_advance(self._time_moved)
        self._subscriptions: list[_Subscription] = []
        self.reset()

    @property
    def clock(self) -> Clock:
        return self._clock

    def reset(self) -> None:
        """Forgets every job, finished job, worker, limit and schedule (subscriptions stay), and starts the ids
        again from 1."""
        self._ids = itertools.count(1)
        self._worker_ids = itertools.count(1)
        self.jobs: dict[int, JobRow] = {}
        self.log: dict[int, LogRow] = {}
        self._workers: dict[int, WorkerRow] = {}
        self._buckets: dict[str, Bucket] = {}
        self._dedupe: dict[str, int] = {}
        self._ready: dict[str, list[tuple[int, int, int, int]]] = {}
        self._suspects: dict[str, list[tuple[int, int, int, int]]] = {}
        self._deferred: dict[str, list[tuple[float, int, int]]] = {}
        self._schedules: dict[str, ScheduleState] = {}
        self._pauses: dict[str, bool] = {}
        self._reset_workflows()

    def finished(self, entrypoint: str | None = None, status: FinalStatus | None = None) -> list[JobState]:
        """The jobs that ended (in the order they ended), with their final status, attempts, error and result;
        only those of ``entrypoint`` or with ``status`` when given."""
        rows = sorted(self.log.values(), key=lambda row: (row.finished_at, row.job_id))
        return [
            self._finished_state(row)
            for row in rows
            if (entrypoint is None or row.entrypoint == entrypoint) and (status is None or row.status == status)
        ]

    def _time_moved(self) -> None:
        # What the passing of time makes possible (deferred jobs come due, tokens refill, retries fall due)
        # is announced as a notification would be: workers claim again.
        self._emit(Event("enqueued"))

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
    def _set_status(self, job: JobRow, status: LiveStatus) -> None:
        job.status = status
        job.version += 1
        if status == "queued":
            heapq.heappush(self._ready.setdefault(job.entrypoint, []), (-job.priority, job.id, job.id, job.version))
        elif status == "suspect":
            heapq.heappush(self._suspects.setdefault(job.entrypoint, []), (-job.priority, job.id, job.id, job.version))
        elif status == "deferred":
            heapq.heappush(
                self._deferred.setdefault(job.entrypoint, []),
                (job.execute_after.timestamp(), job.id, job.version),
            )

    def _remove(self, job: JobRow) -> None:
        del self.jobs[job.id]
        job.version += 1
        if job.dedupe_key is not None and self._dedupe.get(job.dedupe_key) == job.id:
            del self._dedupe[job.dedupe_key]

    def _log(self, job: JobRow, status: FinalStatus, **fields: Any) -> None:
        self.log[job.id] = LogRow(
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
            job = new_row(next(self._ids), new, now)
            self.jobs[job.id] = job
            if job.dedupe_key is not None:
                self._dedupe[job.dedupe_key] = job.id
            self._set_status(job, "deferred" if job.execute_after > now else "queued")
            ids.append(job.id)
        delays = [max((j.execute_after or now + timedelta(seconds=j.delay)) - now, timedelta(0)) for j in jobs]
        due_in = min(delays).total_seconds() if all(d > timedelta(0) for d in delays) else None
        # With the highest priority of the new jobs, as a producer's notice says it (pgqd/sql/notices.py).
        top = max((j.priority for j in jobs), default=0)
        self._emit(Event("enqueued", tuple(sorted({j.entrypoint for j in jobs})), due_in=due_in, top_priority=top))
        return ids

    async def cancel(self, ids: Sequence[int], status: FinalStatus = "canceled") -> CancelResult:
        canceled: list[int] = []
        signalled: list[int] = []
        finished_watched: list[int] = []
        ended: list[Ended] = []
        for job_id in dict.fromkeys(ids):
            job = self.jobs.get(job_id)
            if job is None:
                continue
            if job.status == "picked":
                job.cancel_requested = True
                signalled.append(job_id)
                continue
            self._remove(job)
            self._log(job, status, error=job.last_error, payload=_kept_beyond_outcomes(job))
            canceled.append(job_id)
            if job.notify_finished:
                finished_watched.append(job_id)
            if job.has_dependents:
                ended.append((job.id, status, None))
        self._settle_ended(ended)
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
            job.deaths = 0
            job.isolated = False
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
                    payload=job.payload,
                )
            elif job_id in self.log:
                states[job_id] = self._finished_state(self.log[job_id])
        return states

    @staticmethod
    def _finished_state(row: LogRow) -> JobState:
        return JobState(
            row.job_id,
            row.entrypoint,
            row.status,
            row.attempts,
            row.priority,
            row.created_at,
            finished_at=row.finished_at,
            error=row.error,
            result=row.result,
            payload=row.payload,
        )

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
        self._workers[worker_id] = WorkerRow(info, self._clock())
        return worker_id

    async def heartbeat(self, worker_id: int, info: WorkerInfo) -> HeartbeatReply:
        worker = self._workers.get(worker_id)
        if worker is None:
            self._workers[worker_id] = WorkerRow(info, self._clock())
        else:
            worker.heartbeat_at = self._clock()
        cancel = [
            j.id for j in self.jobs.values() if j.worker_id == worker_id and j.status == "picked" and j.cancel_requested
        ]
        return HeartbeatReply(cancel, self._suspects_waiting(info.entrypoints))

    # --- worker deaths ------------------------------------------------------------------------------------

    def _suspects_waiting(self, entrypoints: Sequence[str]) -> bool:
        for entrypoint in entrypoints:
            heap = self._suspects.get(entrypoint, [])
            while heap:
                job = self.jobs.get(heap[0][2])
                if job is not None and job.version == heap[0][3] and job.status == "suspect":
                    return True
                heapq.heappop(heap)  # an entry left behind by a change of status
        return False

    def _take_heads(self, heap: list[tuple[int, int, int, int]], status: LiveStatus, allow: int) -> list[JobRow]:
        found: list[JobRow] = []
        while heap and len(found) < allow:
            _, _, job_id, version = heapq.heappop(heap)
            job = self.jobs.get(job_id)
            if job is not None and job.version == version and job.status == status:
                found.append(job)
        return found

    async def deregister_worker(self, worker_id: int) -> None:
        self._workers.pop(worker_id, None)

    def _allowance(self, limit: EntrypointLimit, batch: int, now: float) -> int:
        allow = batch
        if limit.concurrency > 0:
            allow = min(allow, max(limit.concurrency - self._running(limit.name), 0))
        if limit.rate_per_second > 0:
            allow = min(allow, math.floor(self._refilled(limit, now)))
        return allow

    def _running(self, entrypoint: str) -> int:
        return sum(1 for j in self.jobs.values() if j.status == "picked" and j.entrypoint == entrypoint)

    def _refilled(self, limit: EntrypointLimit, now: float) -> float:
        bucket = self._buckets.setdefault(limit.name, Bucket(limit.burst, now))
        return min(limit.burst, bucket.tokens + limit.rate_per_second * (now - bucket.refilled_at))

    def _candidates(self, entrypoint: str, allow: int, now: float) -> list[JobRow]:
        """Up to ``allow`` eligible jobs of one entrypoint: the ready head plus deferred jobs now due."""
        found = self._take_heads(self._ready.get(entrypoint, []), "queued", allow)
        due: list[JobRow] = []
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

    async def claim(
        self, worker_id: int, batch: int, limits: Sequence[EntrypointLimit], *, isolated: bool = False
    ) -> ClaimResult:
        if self._pauses:
            paused = PauseState.from_rows(self._pauses.items())
            limits = [limit for limit in limits if not paused.is_paused(limit.name)]
        now = self._clock()
        picked_at = datetime.fromtimestamp(now, UTC)
        if isolated:
            batch = 1  # a suspect runs alone
        pool: list[JobRow] = []
        found_some: set[str] = set()
        allowed: dict[str, int] = {}
        for limit in limits:
            allow = allowed[limit.name] = self._allowance(limit, batch, now)
            found = []
            if allow > 0:
                if isolated:
                    found = self._take_heads(self._suspects.get(limit.name, []), "suspect", allow)
                else:
                    found = self._candidates(limit.name, allow, now)
            if found:
                found_some.add(limit.name)
            pool.extend(found)
        pool.sort(key=lambda j: (-j.priority, j.id))
        taken, spare = pool[:batch], pool[batch:]
        # Limited entrypoints closed for now, as the claim function reports them (migrations 0014 to 0016).
        taken_of = Counter(job.entrypoint for job in taken)
        full = len(taken) >= batch
        last_places = {
            # Its concurrency limit's last free places taken (not for want of tokens).
            limit.name
            for limit in limits
            if limit.concurrency > 0
            and limit.rate_per_second <= 0
            and 0 < allowed[limit.name] < batch
            and taken_of[limit.name] >= allowed[limit.name]
        }
        idle = last_places | {
            # Nothing taken: nothing could be, or a full batch of jobs came before all of its own.
            limit.name
            for limit in limits
            if limit.limited and not taken_of[limit.name] and (full or limit.name not in found_some)
        }
        # Of those, the ones whose concurrency limit is reached (migration 0018): its last places taken here, or
        # none left with work waiting.
        reached = frozenset(
            limit.name
            for limit in limits
            if limit.name in idle
            and limit.concurrency > 0
            and (limit.name in last_places or (not allowed[limit.name] and self._limit_reached(limit, now)))
        )
        for job in spare:
            self._set_status(job, job.status)
        by_limit = {limit.name: limit for limit in limits}
        claimed = [
            self._pick(job, worker_id, picked_at, by_limit[job.entrypoint] if isolated else None) for job in taken
        ]
        for name in {job.entrypoint for job in taken}:
            limit = by_limit[name]
            if limit.rate_per_second > 0:
                spent = sum(1 for job in taken if job.entrypoint == name)
                self._buckets[name] = Bucket(self._refilled(limit, now) - spent, now)
        due_in = self._next_due_in(limits, now) if len(claimed) < batch else None
        suspects = (isolated or len(claimed) < batch) and self._suspects_waiting([limit.name for limit in limits])
        throttled = self._throttled(limits, now)
        # As the claim function reports them to a claim that is not isolated (migrations 0014 to 0016).
        closed: dict[str, float | None] = {} if isolated else {name: None for name in idle}
        if not isolated:
            closed.update(throttled)
        reached = frozenset() if isolated else reached
        return ClaimResult(claimed, min(throttled.values(), default=None), due_in, suspects, closed, reached)

    def _pick(
        self, job: JobRow, worker_id: int, picked_at: datetime, isolated_by: EntrypointLimit | None = None
    ) -> ClaimedJob:
        """Marks ``job`` as claimed by the worker (to run alone under ``isolated_by``'s budget, when given)."""
        self._set_status(job, "picked")
        job.picked_at = picked_at
        job.worker_id = worker_id
        job.attempts += 1
        job.isolated = isolated_by is not None
        if isolated_by is not None:
            job.max_deaths = isolated_by.max_worker_deaths
            job.hold_failures = isolated_by.hold_failures
        return ClaimedJob(
            job.id,
            job.entrypoint,
            job.payload,
            job.headers,
            job.priority,
            job.attempts,
            job.created_at.timestamp(),
            job.execute_after.timestamp(),
            picked_at.timestamp(),
            job.cancel_requested,
        )

    def _throttled(self, limits: Sequence[EntrypointLimit], now: float) -> dict[str, float]:
        """Rate-limited entrypoints with eligible jobs and no token: the seconds until their next one."""
        hints: dict[str, float] = {}
        for limit in limits:
            if limit.rate_per_second > 0:
                tokens = self._refilled(limit, now)
                if tokens < 1 and self._has_eligible(limit.name, now):
                    hints[limit.name] = (1 - tokens) / limit.rate_per_second
        return hints

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

    def _limit_reached(self, limit: EntrypointLimit, now: float) -> bool:
        """Its concurrency limit is what keeps its waiting jobs back (not a rate limit's want of tokens)."""
        if limit.rate_per_second > 0 and self._refilled(limit, now) < 1:
            return False
        return self._running(limit.name) >= limit.concurrency and self._has_eligible(limit.name, now)

    def _has_eligible(self, entrypoint: str, now: float) -> bool:
        return any(
            j.entrypoint == entrypoint
            and (j.status == "queued" or (j.status == "deferred" and j.execute_after.timestamp() <= now))
            for j in self.jobs.values()
        )

    async def record(
        self,
        worker_id: int,
        outcomes: Sequence[Outcome],
        slot_entrypoints: Sequence[str],
        keep_payload: Sequence[str] = (),
        hand_over: HandOver | None = None,
    ) -> Recorded:
        applied = 0
        finished_watched: list[int] = []
        requeued: dict[str, list[float]] = {}
        ended: list[Ended] = []
        ended_of: Counter[str] = Counter()
        for outcome in outcomes:
            job = self.jobs.get(outcome.job_id)
            if job is None or job.worker_id != worker_id or job.status != "picked" or job.picked_at is None:
                continue
            applied += 1
            ended_of[job.entrypoint] += 1
            if isinstance(outcome, Finished):
                self._remove(job)
                started = job.picked_at + timedelta(seconds=outcome.started_after)
                # A result the entrypoint does not store is kept for the job's children, if it has any.
                kept = outcome.result_json or (outcome.handed_json if job.has_dependents else None)
                result = None if kept is None else json.loads(kept)
                self._log(
                    job,
                    outcome.status,
                    started_at=started,
                    finished_at=started + timedelta(seconds=outcome.duration),
                    worker_id=worker_id,
                    error=outcome.error,
                    result=result,
                    payload=job.payload if job.entrypoint in keep_payload else None,
                )
                if job.has_dependents:
                    ended.append((job.id, outcome.status, result))
                if job.notify_finished:
                    finished_watched.append(job.id)
                continue
            job.worker_id = None
            job.picked_at = None
            was_isolated, job.isolated = job.isolated, False
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
                # A suspect released unfinished (shutdown) has not shown it is harmless.
                self._set_status(job, "suspect" if was_isolated else "queued")
                requeued.setdefault(job.entrypoint, []).append(0.0)
            else:
                job.execute_after = self._now() + timedelta(seconds=outcome.delay)
                self._set_status(job, "deferred" if outcome.delay > 0 else "queued")
                requeued.setdefault(job.entrypoint, []).append(outcome.delay)
        self._settle_ended(ended)
        successors = self._hand_over(worker_id, ended_of, hand_over) if hand_over is not None else []
        taken_of = Counter(job.entrypoint for job in successors)
        # A slot handed over to the entrypoint's next job is not free.
        slots = {name for name, count in ended_of.items() if name in slot_entrypoints and count > taken_of[name]}
        if finished_watched:
            self._emit(Event("finished", ids=tuple(finished_watched)))
        if slots:
            self._emit(Event("slot", tuple(sorted(slots))))
        if requeued:
            delays = [d for ds in requeued.values() for d in ds]
            due_in = min(delays) if all(d > 0 for d in delays) else None
            self._emit(Event("enqueued", tuple(sorted(requeued)), due_in=due_in))
        return Recorded(applied, successors)

    def _hand_over(self, worker_id: int, ended_of: Counter[str], hand_over: HandOver) -> list[ClaimedJob]:
        """The next jobs of the entrypoints whose slots ``hand_over`` passes on, as RECORD_OUTCOMES takes them:
        no more than the jobs of each that ended here, nor than its limit allows over those running now."""
        paused = PauseState.from_rows(self._pauses.items()) if self._pauses else None
        now = self._clock()
        picked_at = datetime.fromtimestamp(now, UTC)
        successors: list[ClaimedJob] = []
        for name, wanted in hand_over.wanted.items():
            if paused is not None and paused.is_paused(name):
                continue
            limit = EntrypointLimit(name, concurrency=hand_over.concurrency[name])
            count = min(ended_of[name], self._allowance(limit, wanted, now))
            if count > 0:
                successors += [self._pick(job, worker_id, picked_at) for job in self._candidates(name, count, now)]
        return successors

    async def release_stray(self, worker_id: int, keep: Sequence[int]) -> list[int]:
        kept = set(keep)
        stray = [
            j for j in self.jobs.values() if j.worker_id == worker_id and j.status == "picked" and j.id not in kept
        ]
        for job in stray:
            job.worker_id = None
            job.picked_at = None
            job.attempts = max(job.attempts - 1, 0)
            self._set_status(job, "suspect" if job.isolated else "queued")
            job.isolated = False
        if stray:
            self._emit(Event("enqueued", tuple(sorted({j.entrypoint for j in stray}))))
        return [j.id for j in stray]

    async def rescue_stale(self, worker_timeout: float) -> list[int]:
        now = self._clock()
        stale = {wid: w for wid, w in self._workers.items() if w.heartbeat_at < now - worker_timeout}
        for wid in stale:
            del self._workers[wid]
        causes: dict[int, str] = {}
        for job in self.jobs.values():
            if job.status != "picked" or job.worker_id is None:
                continue
            dead = stale.get(job.worker_id)
            if dead is not None:
                causes[job.id] = f"no heartbeat for {worker_timeout:g}s from pid {dead.info.pid} on {dead.info.host}"
            elif (
                job.worker_id not in self._workers
                and job.picked_at is not None
                and job.picked_at.timestamp() < now - worker_timeout
            ):
                causes[job.id] = "its worker vanished"
        return self._take_back(causes)

    async def rescue_worker(self, worker_id: int, cause: str = "worker died") -> list[int]:
        self._workers.pop(worker_id, None)
        owned = [j for j in self.jobs.values() if j.worker_id == worker_id and j.status == "picked"]
        return self._take_back({j.id: cause for j in owned})

    def _take_back(self, causes: dict[int, str]) -> list[int]:
        """The jobs of dead workers, with what killed each worker, go back at once, each counting the death; a
        job its worker ran alone is charged with it, and given up once it died alone ``max_deaths`` times (as
        the SQL of the rescues does)."""
        lost = [self.jobs[job_id] for job_id in causes]
        held_by: dict[int | None, int] = {}
        for job in lost:
            held_by[job.worker_id] = held_by.get(job.worker_id, 0) + 1
        finished_watched: list[int] = []
        suspected: set[str] = set()
        ended: list[Ended] = []
        for job in lost:
            cause = causes[job.id]
            charged = job.isolated and held_by[job.worker_id] == 1
            worker_id, picked_at = job.worker_id, job.picked_at
            job.worker_id = None
            job.picked_at = None
            job.isolated = False
            job.deaths += 1
            budget = job.max_deaths or 3
            if charged:
                job.lost_runs += 1
            if not charged or job.lost_runs < budget:
                job.attempts = max(job.attempts - 1, 0)
                if charged:
                    message = (
                        f"killed its worker process ({cause}) while running alone, in death {job.lost_runs} of "
                        f"{budget} allowed"
                    )
                    job.last_error = ErrorInfo("pgqd.WorkerLost", message)
                self._set_status(job, "suspect" if charged or job.deaths >= 2 else "queued")
                suspected.add(job.entrypoint)
                continue
            given_up = ErrorInfo(
                "pgqd.WorkerLost",
                f"killed its worker process ({cause}) while running alone, in death {job.lost_runs} of {budget} "
                "allowed: given up",
            )
            if job.notify_finished:
                finished_watched.append(job.id)
            if job.hold_failures:
                job.last_error = given_up
                self._set_status(job, "failed")
                if job.dedupe_key is not None and self._dedupe.get(job.dedupe_key) == job.id:
                    del self._dedupe[job.dedupe_key]
            else:
                self._remove(job)
                self._log(
                    job,
                    "exception",
                    started_at=picked_at,
                    worker_id=worker_id,
                    error=given_up,
                    payload=_kept_beyond_outcomes(job),
                )
                if job.has_dependents:
                    ended.append((job.id, "exception", None))
        self._settle_ended(ended)
        if finished_watched:
            self._emit(Event("finished", ids=tuple(finished_watched)))
        if suspected:
            self._emit(Event("enqueued", tuple(sorted(suspected))))
        return sorted(causes)

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

    async def current_time(self) -> datetime:
        return self._now()

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
