"""The PostgreSQL adapter of the storage port, on asyncpg.

It runs on whatever the caller gives it: a producer's connection (so an enqueue joins the caller's
transaction) or pool, or the worker's own pool. Events arrive on a listening connection that reconnects with
backoff when it owns its connection.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

import asyncpg

from pgqd.backend import operations, workflow_operations
from pgqd.backend.base import EventCallback
from pgqd.backend.bounded import BoundedPool, DatabaseHealth, DatabaseTimeouts, guard, tune_socket
from pgqd.backend.connection import PgSubscription, close_connection
from pgqd.backend.operations import run_async
from pgqd.backend.ready_scan import ReadyScanStarts
from pgqd.backend.warm_up import warm_up
from pgqd.identifiers import Names
from pgqd.models import (
    CancelResult,
    ClaimedJob,
    ClaimResult,
    EntrypointLimit,
    Event,
    FinalStatus,
    Finished,
    HandOver,
    HeartbeatReply,
    JobLinks,
    JobState,
    NewJob,
    NewStep,
    OnConflict,
    Outcome,
    PauseState,
    Recorded,
    ScheduleDefinition,
    ScheduleState,
    StepsEnqueued,
    Unfinished,
    WorkerInfo,
    WorkflowView,
)
from pgqd.sql.statements import DATABASE_CLOCK, statements_for

# The layout of a CLAIM_JOBS row: ClaimedJob's fields, then wake_in and hint.
CLAIMED_JOB_COLUMNS = len(fields(ClaimedJob))
CLAIM_WAKE_IN = CLAIMED_JOB_COLUMNS
CLAIM_ENTRYPOINT = 1  # of a hint row: the entrypoint it is about
CLAIM_LIMIT_REACHED = CLAIMED_JOB_COLUMNS - 1  # of a 'closed' row: its concurrency limit is reached
CLAIM_HINT = CLAIMED_JOB_COLUMNS + 1


class PostgresBackend:
    """The storage port on PostgreSQL.

    ``executor`` is an asyncpg Connection or Pool. ``listen_connect`` opens the connection that listens for
    events; without it the listener borrows a connection from the pool (or shares the single connection).
    """

    def __init__(
        self,
        executor: Any,
        names: Names | None = None,
        *,
        listen_connect: Callable[[], Awaitable[Any]] | None = None,
        owns_executor: bool = False,
    ) -> None:
        self.names = names or Names()
        self._owns_executor = owns_executor
        self.sql = statements_for(self.names)
        self._db = executor
        self._listen_connect = listen_connect
        self._channel = self.names.channel
        self._limit_arrays: dict[tuple[EntrypointLimit, ...], tuple[list[Any], ...]] = {}
        self._scan_starts: dict[int, ReadyScanStarts] = {}  # per worker id
        # Set by ``open``: the time bounds of every call, and whether the database answers (see bounded.py).
        self.timeouts: DatabaseTimeouts | None = None
        self.health = DatabaseHealth()

    # --- producers and operators ---------------------------------------------------------------------------
    # The statements and the reading of their rows are shared with every driver's adapter (operations.py).
    async def _fetch(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        rows: list[Any] = await self._db.fetch(sql, *args)
        return rows

    async def enqueue(self, jobs: Sequence[NewJob], on_conflict: OnConflict) -> list[int | None]:
        return await run_async(operations.enqueue(self.sql, jobs, on_conflict), self._fetch)

    async def cancel(self, ids: Sequence[int], status: FinalStatus = "canceled") -> CancelResult:
        return await run_async(operations.cancel(self.sql, ids, status), self._fetch)

    async def requeue(self, ids: Sequence[int]) -> list[int]:
        return await run_async(operations.requeue(self.sql, ids), self._fetch)

    async def job_states(self, ids: Sequence[int]) -> dict[int, JobState]:
        return await run_async(operations.job_states(self.sql, ids), self._fetch)

    async def watch_finished(self, job_id: int) -> bool:
        return await run_async(operations.watch_finished(self.sql, job_id), self._fetch)

    async def subscribe(self, callback: EventCallback) -> PgSubscription:
        callback = self._watching_for_starts(callback)
        if self._listen_connect is not None:
            subscription = PgSubscription(
                self._listen_connect,
                self._channel,
                callback,
                reconnect=True,
                close_connection=close_connection,
                timeouts=self.timeouts,
                health=self.health,
                # A silent LISTEN connection hints that the pool's idle ones are dead too.
                on_stalled=self._db.cut_stalled if isinstance(self._db, BoundedPool) else None,
            )
        elif isinstance(self._db, asyncpg.Pool):
            pool = self._db

            async def release(conn: Any) -> None:
                await pool.release(conn)

            subscription = PgSubscription(
                pool.acquire, self._channel, callback, reconnect=True, close_connection=release
            )
        else:
            conn = self._db

            async def shared() -> Any:
                return conn

            async def keep_open(_conn: Any) -> None:
                return None

            subscription = PgSubscription(shared, self._channel, callback, reconnect=False, close_connection=keep_open)
        await subscription.start()
        return subscription

    def _watching_for_starts(self, callback: EventCallback) -> EventCallback:
        """``callback``, after the notices that move this backend's workers' starts back (ready_scan.py): jobs put
        back with their old ids, jobs of a higher priority, or events missed while the listener was down."""

        def observed(event: Event) -> None:
            if event.kind == "enqueued" or event.kind == "reconnected":
                for starts in self._scan_starts.values():
                    starts.enqueued(event.entrypoints, event.top_priority)
            callback(event)

        return observed

    async def enqueue_steps(self, steps: Sequence[NewStep], workflow: str | None, make_workflow: bool) -> StepsEnqueued:
        operation = workflow_operations.enqueue_steps(self.sql, steps, workflow, make_workflow)
        return await run_async(operation, self._fetch)

    async def job_links(self, job_id: int) -> JobLinks:
        return await run_async(workflow_operations.job_links(self.sql, job_id), self._fetch)

    async def workflow(self, workflow_id: int) -> WorkflowView | None:
        return await run_async(workflow_operations.workflow(self.sql, workflow_id), self._fetch)

    async def cancel_workflow(self, workflow_id: int) -> CancelResult:
        return await run_async(workflow_operations.cancel_workflow(self.sql, workflow_id), self._fetch)

    async def parent_results(self, job_id: int) -> dict[int | str, Any]:
        return await run_async(workflow_operations.parent_results(self.sql, job_id), self._fetch)

    async def pause(self, entrypoints: Sequence[str] | None) -> None:
        await run_async(operations.pause(self.sql, entrypoints), self._fetch)

    async def resume(self, entrypoints: Sequence[str] | None) -> None:
        await run_async(operations.resume(self.sql, entrypoints), self._fetch)

    async def pauses(self) -> PauseState:
        return await run_async(operations.pauses(self.sql), self._fetch)

    # --- workers ------------------------------------------------------------------------------------------
    async def register_worker(self, info: WorkerInfo) -> int:
        worker_id: int = await guard(
            self._db.fetchval(self.sql.register_worker, info.host, info.pid, list(info.entrypoints))
        )
        return worker_id

    async def heartbeat(self, worker_id: int, info: WorkerInfo) -> HeartbeatReply:
        row = await guard(self._db.fetchrow(self.sql.heartbeat, worker_id, info.host, info.pid, list(info.entrypoints)))
        return HeartbeatReply(list(row["cancel"]), row["suspects"])

    async def deregister_worker(self, worker_id: int) -> None:
        await guard(self._db.execute(self.sql.deregister_worker, worker_id))

    async def claim(
        self, worker_id: int, batch: int, limits: Sequence[EntrypointLimit], *, isolated: bool = False
    ) -> ClaimResult:
        key = tuple(limits)
        arrays = self._limit_arrays.get(key)
        if arrays is None:
            arrays = (
                [limit.name for limit in limits],
                [limit.concurrency for limit in limits],
                [limit.rate_per_second for limit in limits],
                [limit.burst for limit in limits],
            )
            self._limit_arrays[key] = arrays
        # The death budgets travel only with an isolated claim, the one that stamps them on the job.
        budgets = (
            ([limit.hold_failures for limit in limits], [limit.max_worker_deaths for limit in limits])
            if isolated
            else (None, None)
        )
        scan = None if isolated else self._scan_starts.setdefault(worker_id, ReadyScanStarts())
        sent = None if scan is None else scan.for_claim(arrays[0])
        starts = (None, None) if sent is None else (sent.priorities, sent.ids)
        result = await self._claim(worker_id, batch, arrays, isolated, budgets, starts)
        if starts[1] is not None and len(result.jobs) < batch:
            # Read from where the last claims started, it came back short: what that read cannot see (a lower
            # priority, a job put back) may fill the rest.
            rest = await self._claim(worker_id, batch - len(result.jobs), arrays, False, budgets)
            # A limit whose last places the first read took is reached, though the second finds no work of it.
            reached = rest.reached | (result.reached & rest.closed.keys())
            result = ClaimResult(
                result.jobs + rest.jobs, rest.throttled_in, rest.due_in, rest.suspects, rest.closed, reached
            )
        if scan is not None and sent is not None:
            scan.claimed(sent, result.jobs, complete=len(result.jobs) >= batch)
        return result

    async def _claim(
        self,
        worker_id: int,
        batch: int,
        arrays: tuple[list[Any], ...],
        isolated: bool,
        budgets: tuple[list[bool] | None, list[int] | None],
        starts: tuple[list[int | None] | None, list[int | None] | None] = (None, None),
    ) -> ClaimResult:
        """One call of the claim function."""
        rows = await guard(
            self._db.fetch(self.sql.claim_jobs, worker_id, batch, *arrays, isolated, *budgets, not isolated, *starts)
        )
        jobs: list[ClaimedJob] = []
        closed: dict[str, float | None] = {}
        reached: set[str] = set()
        due: list[float] = []
        suspects = False
        for row in rows:
            # CLAIM_JOBS names its first columns as ClaimedJob's fields, in their order (tests/test_claim_contract.py
            # checks both): taken by position, as a look-up by name would cost 11 per job.
            hint = row[CLAIM_HINT]
            if hint is None:
                jobs.append(ClaimedJob(*row[:CLAIMED_JOB_COLUMNS]))
            elif hint == "throttled" or hint == "closed":
                closed[row[CLAIM_ENTRYPOINT]] = row[CLAIM_WAKE_IN]
                if row[CLAIM_LIMIT_REACHED]:
                    reached.add(row[CLAIM_ENTRYPOINT])
            elif hint == "due":
                due.append(row[CLAIM_WAKE_IN])
            else:
                suspects = True
        throttled_in = min((wait for wait in closed.values() if wait is not None), default=None)
        return ClaimResult(jobs, throttled_in, min(due, default=None), suspects, closed, frozenset(reached))

    async def record(
        self,
        worker_id: int,
        outcomes: Sequence[Outcome],
        slot_entrypoints: Sequence[str],
        keep_payload: Sequence[str] = (),
        hand_over: HandOver | None = None,
    ) -> Recorded:
        # In id order, the order in which the statement locks the rows: an enqueue naming some of them as parents
        # locks them in that order too (enqueue_steps), so the two take turns rather than deadlock.
        finished = sorted((o for o in outcomes if isinstance(o, Finished)), key=_by_job_id)
        requeued = sorted((o for o in outcomes if isinstance(o, Unfinished)), key=_by_job_id)
        scan = self._scan_starts.get(worker_id)
        if scan is not None and any(o.kind == "release" or (o.kind == "retry" and o.delay <= 0) for o in requeued):
            # Queued again with their old ids, before where this worker's claims now start reading.
            scan.forget()
        columns = (
            worker_id,
            [o.job_id for o in finished],
            _nullable([None if o.status == "successful" else o.status for o in finished]),
            [o.started_after for o in finished],
            [o.duration for o in finished],
            *_error_columns(finished),
            _nullable([o.result_json for o in finished]),
            [o.job_id for o in requeued],
            [o.kind for o in requeued],
            [o.delay for o in requeued],
            [json.dumps(o.error.as_dict()) if o.error else None for o in requeued],
            self._channel,
            list(slot_entrypoints),
            list(keep_payload),
            _nullable([o.handed_json for o in finished]),
        )
        if hand_over is None:
            return Recorded(await guard(self._db.fetchval(self.sql.record_outcomes, *columns)))
        wanted = hand_over.wanted
        rows = await guard(
            self._db.fetch(
                self.sql.record_outcomes_handing_over,
                *columns,
                list(wanted),
                list(wanted.values()),
                [hand_over.concurrency[name] for name in wanted],
            )
        )
        # RECORD_OUTCOMES_HANDING_OVER: applied and notices, then a successor's ClaimedJob fields (NULL without one).
        successors = [ClaimedJob(*row[2:]) for row in rows if row[2] is not None]
        return Recorded(rows[0][0], successors)

    async def release_stray(self, worker_id: int, keep: Sequence[int]) -> list[int]:
        ids = await guard(self._db.fetchval(self.sql.release_stray, worker_id, self._channel, list(keep)))
        return list(ids)

    async def rescue_stale(self, worker_timeout: float) -> list[int]:
        ids = await guard(self._db.fetchval(self.sql.rescue_stale, worker_timeout, self._channel))
        return list(ids)

    async def rescue_worker(self, worker_id: int, cause: str = "worker died") -> list[int]:
        ids = await guard(self._db.fetchval(self.sql.rescue_worker, worker_id, self._channel, cause))
        return list(ids)

    # --- schedules ----------------------------------------------------------------------------------------
    async def sync_schedules(self, schedules: Sequence[ScheduleDefinition]) -> None:
        await guard(
            self._db.fetchrow(
                self.sql.sync_schedules,
                [s.spec.name for s in schedules],
                [s.spec.cron for s in schedules],
                [s.spec.timezone for s in schedules],
                [s.spec.entrypoint for s in schedules],
                [s.spec.payload for s in schedules],
                [s.spec.priority for s in schedules],
                [s.spec.enabled for s in schedules],
                [s.spec.misfire for s in schedules],
                [s.first_run for s in schedules],
            )
        )

    async def schedule_states(self) -> list[ScheduleState]:
        rows = await guard(self._db.fetch(self.sql.schedule_states))
        return [ScheduleState(*row) for row in rows]

    async def current_time(self) -> datetime:
        now: datetime = await guard(self._db.fetchval(DATABASE_CLOCK))
        return now

    async def fire_schedule(
        self, name: str, due: datetime, next_run: datetime, jobs: Sequence[NewJob]
    ) -> list[int] | None:
        row = await guard(
            self._db.fetchrow(
                self.sql.fire_schedule,
                name,
                due,
                next_run,
                [j.entrypoint for j in jobs],
                [j.payload for j in jobs],
                [j.headers for j in jobs],
                [j.priority for j in jobs],
                due if jobs else None,
                self._channel,
            )
        )
        return list(row["ids"]) if row["won"] else None

    @classmethod
    async def open(
        cls,
        dsn: str | None,
        names: Names | None = None,
        *,
        pool_size: int = 2,
        application_name: str = "pgqd",
        timeouts: DatabaseTimeouts | None = None,
        on_recovered: Callable[[], None] | None = None,
        warm: bool = False,
    ) -> PostgresBackend:
        """A backend with a pool and a listening connection of its own, as a worker process uses.

        Every call it makes is bounded by ``timeouts`` (see ``pgqd.backend.bounded``); ``on_recovered`` runs when
        the database answers again after an outage. ``warm``: each pooled connection is readied to claim and
        flush when it opens (``warm_up``), for a worker; a process that makes one other call does without."""
        timeouts = timeouts or DatabaseTimeouts()
        # Generic plans: pgqd's statements take arrays whose contents do not change the best plan, and planning
        # each execution anew (PostgreSQL's default for the first calls and whenever it judges a custom plan
        # cheaper) costs more than running them. Measured: claim 0.74 -> 0.31 ms, outcome flush 1.09 -> 0.52 ms.
        # No JIT: a generic plan guesses a tenth of the table's rows for the claim's LIMIT $batch, so once the
        # statistics count a backlog of a million jobs its estimated cost passes the JIT thresholds, and every claim
        # compiled its plan to machine code again before running it: 1.3 s for a claim of 10, with autovacuum's
        # ANALYZE on (the soak's collapse, docs/performance.md). Run, the claim takes a millisecond.
        settings = {
            "application_name": application_name,
            "plan_cache_mode": "force_generic_plan",
            "jit": "off",
            **timeouts.server_settings,
        }
        # command_timeout here also bounds what asyncpg does on its own: a close, a reset, waiting for a cancel.
        connect_options = {
            "timeout": timeouts.connect,
            "command_timeout": timeouts.command,
            "server_settings": settings,
        }

        async def listen_connect() -> Any:
            conn = await asyncpg.connect(dsn, **connect_options)
            tune_socket(conn, timeouts)
            return conn

        health = DatabaseHealth(on_recovered)

        async def ready_to_claim(conn: Any) -> None:
            await warm_up(cls(conn, names))

        prepare = ready_to_claim if warm else None
        pool = await BoundedPool.open(dsn, pool_size, timeouts, health, prepare=prepare, **connect_options)
        backend = cls(pool, names, listen_connect=listen_connect, owns_executor=True)
        backend.timeouts = timeouts
        backend.health = health
        return backend

    async def close(self) -> None:
        """Closes the pool this backend opened itself; a caller's connection or pool is left alone."""
        if self._owns_executor:
            await self._db.close()


def _by_job_id(outcome: Outcome) -> int:
    return outcome.job_id


def _nullable(values: list[Any]) -> list[Any] | None:
    """A column of NULLs goes as one NULL array, which unnest pads with NULLs: the driver then encodes nothing
    for it, where it would otherwise inspect every element (most flushes carry no error and no result)."""
    return values if any(value is not None for value in values) else None


def _error_columns(finished: Sequence[Finished]) -> tuple[list[Any] | None, list[Any] | None, list[Any] | None]:
    if all(o.error is None for o in finished):
        return None, None, None
    return (
        [o.error.type if o.error else None for o in finished],
        [o.error.message if o.error else None for o in finished],
        [o.error.traceback if o.error else None for o in finished],
    )
