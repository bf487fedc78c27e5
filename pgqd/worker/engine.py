"""The worker engine: claims jobs, runs them with bounded concurrency, records outcomes, stays alive.

One task owns each long-lived duty: the dispatch loop (claiming), the outcome recorder (flushing) and the
heartbeat (liveness, cancellation requests, rescue of dead workers' jobs, log retention). Events from the
database (new jobs, cancellations, freed slots) only set flags and wake the dispatch loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog

from pgqd.backend.base import Backend, Subscription
from pgqd.backoff import Backoff
from pgqd.daemon.metrics import WorkerMetrics
from pgqd.entrypoint import Entrypoint
from pgqd.errors import BackendUnavailable
from pgqd.job import Context, Job
from pgqd.models import ClaimedJob, Event, Finished, Outcome, Requeued, WorkerInfo
from pgqd.payload import decode_headers
from pgqd.worker.execution import JobRun, PreparedHandler
from pgqd.worker.outcomes import OutcomeRecorder

log = structlog.get_logger("pgqd.worker")

# A worker keeps a second claim on its way while the jobs of the last one run, so neither the claim's round trip
# nor the jobs wait for each other. Measured with no-op jobs (docs/performance.md): 1 process at batch 10 went
# from 9.1k to 12.5k jobs/s, 2 processes at batch 100 from 39k to 46k.
CLAIMS_IN_FLIGHT = 2


@dataclass(frozen=True)
class WorkerSettings:
    """How one worker runs. Durations are in seconds."""

    concurrency: int = 32
    batch_size: int = 10
    poll_interval: float = 5.0
    worker_timeout: float = 30.0
    shutdown_timeout: float = 30.0
    heartbeat_interval: float | None = None
    retention: float | None = None
    flush_linger: float = 0.005
    flush_max_batch: int = 500
    # Stop claiming after this many jobs (0 = never), so the process can be replaced (see ``retiring``).
    max_jobs: int = 0

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.batch_size < 1:
            raise ValueError("concurrency and batch_size must be at least 1")
        if min(self.poll_interval, self.worker_timeout) <= 0 or self.shutdown_timeout < 0:
            raise ValueError("poll_interval and worker_timeout must be positive, shutdown_timeout not negative")

    @property
    def beat_every(self) -> float:
        # Several beats per timeout, so one slow beat never makes a live worker look dead.
        return self.heartbeat_interval or min(self.worker_timeout / 4, 5.0)


class Worker:
    """Runs jobs of the given entrypoints from ``backend`` until stopped.

    ``await worker.run()`` serves until ``stop()``; ``await worker.run(drain=True)`` returns once nothing is
    eligible any more and every job it started has finished (deferred jobs not yet due are left waiting).
    """

    def __init__(
        self,
        backend: Backend,
        entrypoints: Iterable[Entrypoint],
        settings: WorkerSettings | None = None,
        *,
        resources: Any = None,
        on_outcome: Callable[[Job, Outcome], None] | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.backend = backend
        self.settings = settings or WorkerSettings()
        self.handlers: dict[str, PreparedHandler] = {}
        for entrypoint in entrypoints:
            if entrypoint.name in self.handlers:
                raise ValueError(f"entrypoint {entrypoint.name!r} is given twice")
            self.handlers[entrypoint.name] = PreparedHandler.prepare(entrypoint)
        if not self.handlers:
            raise ValueError("a worker needs at least one entrypoint")
        self.limits = tuple(h.entrypoint.limit for h in self.handlers.values())
        self.resources = resources
        self._on_outcome = on_outcome
        self.metrics = metrics
        # A line per successful job is a debug line; whether debug is on is settled once, not per job.
        self._log_every_job = bool(getattr(log, "is_enabled_for", lambda _level: True)(logging.DEBUG))
        self.info = WorkerInfo(socket.gethostname(), os.getpid(), tuple(self.handlers))
        self.worker_id = 0
        self.registered = asyncio.Event()
        self.retiring = asyncio.Event()
        self.running: dict[int, JobRun] = {}
        self.jobs_started = 0
        self._may_have_work = True
        self._wake = asyncio.Event()
        self._wake_at: float | None = None
        self._stopping = False
        self._stop_fast = asyncio.Event()
        self._grace = self.settings.shutdown_timeout
        self._reconcile = False
        self._reserved = 0
        self._claiming = 0
        self._last_claim = (1, False)
        self._queue_deep = False
        self._claims_sent = 0
        self._claims_settled = 0
        self._executor = ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="pgqd-handler")
        slot_entrypoints = [lim.name for lim in self.limits if lim.concurrency > 0]
        self.recorder = OutcomeRecorder(
            backend,
            lambda: self.worker_id,
            slot_entrypoints,
            max_batch=self.settings.flush_max_batch,
            linger=self.settings.flush_linger,
            on_unavailable=self._database_unavailable,
            after_flush=metrics.publish_soon if metrics is not None else None,
        )

    # --- control ------------------------------------------------------------------------------------------
    def stop(self, grace: float | None = None) -> None:
        """Stop claiming; give running jobs ``grace`` seconds (default ``shutdown_timeout``) to finish, then
        cancel them and release them to the queue. Calling it again stops at once."""
        if self._stopping:
            self._stop_fast.set()
        self._stopping = True
        if grace is not None:
            self._grace = grace
            if grace <= 0:
                self._stop_fast.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    # --- main loop ----------------------------------------------------------------------------------------
    async def run(self, *, drain: bool = False) -> None:
        subscription: Subscription | None = None
        try:
            self.worker_id = await self._retry_until_stopped(lambda: self.backend.register_worker(self.info))
            self.registered.set()
            subscription = await self._retry_until_stopped(lambda: self.backend.subscribe(self._on_event))
            async with asyncio.TaskGroup() as group:
                duties = [group.create_task(self.recorder.run()), group.create_task(self._heartbeat())]
                try:
                    await self._dispatch(drain)
                    await self._finish_running()
                finally:
                    for duty in duties:
                        duty.cancel()
        except _Stopped:
            pass
        finally:
            if not await self.recorder.close(timeout=max(self.settings.worker_timeout / 2, 1.0)):
                log.error("outcomes left unwritten", count=self.recorder.unwritten, worker_id=self.worker_id)
            if self.metrics is not None:
                self.metrics.publish()
            if self.worker_id:
                with contextlib.suppress(BackendUnavailable):
                    await self.backend.deregister_worker(self.worker_id)
            if subscription is not None:
                await subscription.close()
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _dispatch(self, drain: bool) -> None:
        """Claims while there are free slots and maybe work; while the queue is deep two claims run at once, so
        the next batch is on its way while the last one runs."""
        claims: set[asyncio.Task[None]] = set()
        backoff = Backoff()
        try:
            while not self._stopping:
                free = self.settings.concurrency - len(self.running) - self._reserved
                # Counted by the claims themselves as they end, not by the tasks' done callbacks, which run a
                # turn of the loop later and would let this loop see a finished claim as still under way.
                # While claims come back full the queue is deep: the next claim goes out before the last one
                # returns, rather than waiting for it to say there is more.
                may_claim = self._may_have_work or (self._claiming > 0 and self._queue_deep)
                if free <= 0 or not may_claim or self._claiming >= CLAIMS_IN_FLIGHT:
                    if drain and not self._claiming and not self.running:
                        if await self._drained():
                            return
                        if self._may_have_work:
                            continue
                    await self._sleep()
                    continue
                wanted = min(self.settings.batch_size, free)
                if self.settings.max_jobs:
                    wanted = min(wanted, self.settings.max_jobs - self.jobs_started - self._reserved)
                    if wanted <= 0:
                        if not self._claiming:
                            self.retiring.set()
                            if drain and not self.running:
                                return  # retired: it may take no more jobs, so it has drained all it can
                        # Nothing to claim until a claim under way settles, or ever once retired: wait for an
                        # event rather than go round again, which would never let the event loop run.
                        await self._sleep()
                        continue
                if self._reconcile:
                    if self._claiming:
                        # Jobs of a claim still on its way would look stray: settle once none is.
                        await self._sleep()
                        continue
                    try:
                        await self._release_stray()
                    except BackendUnavailable as exc:
                        self._database_unavailable(exc)
                        await self._sleep(backoff.next())
                        continue
                # Cleared before the claim rather than after it: an event that arrives while the claim runs (a
                # job committed after its snapshot) sets it again and is not lost.
                self._may_have_work = False
                self._reserved += wanted
                self._claiming += 1
                self._claims_sent += 1
                task = asyncio.get_running_loop().create_task(self._claim(self._claims_sent, wanted, drain, backoff))
                claims.add(task)
                task.add_done_callback(claims.discard)
        finally:
            if claims:
                # Let claims under way finish: their jobs are picked in the database and must run or be released.
                await asyncio.wait(claims)

    async def _claim(self, number: int, wanted: int, drain: bool, backoff: Backoff) -> None:
        try:
            result = await self.backend.claim(self.worker_id, wanted, self.limits)
        except BackendUnavailable as exc:
            self._database_unavailable(exc)
            self._reconcile = True
            self._may_have_work = True
            await asyncio.sleep(backoff.next())
            return
        finally:
            self._reserved -= wanted
            self._claiming -= 1
            self._wake.set()
        backoff.reset()
        if self.metrics is not None:
            self.metrics.claimed(len(result.jobs))
        claimed_at = time.monotonic()
        for claimed in result.jobs:
            self._start(claimed, claimed_at)
        if len(result.jobs) >= wanted:
            self._may_have_work = True
        # With two claims under way, the one sent last saw the newest state of the queue: an older one that
        # returns after it must not overwrite what it said (say, that a rate limit holds jobs back).
        if number > self._claims_settled:
            self._claims_settled = number
            self._queue_deep = len(result.jobs) >= wanted
            self._last_claim = (len(result.jobs), result.throttled_in is not None)
        if result.throttled_in is not None:
            self._wake_after(result.throttled_in)
        if not drain and result.due_in is not None:
            self._wake_after(result.due_in)

    async def _drained(self) -> bool:
        """In drain mode, with nothing running or being claimed: done when the last claim found nothing (and
        was not held back by a rate limit) and no outcome waits to be written (a retry must become visible)."""
        if self.recorder.unwritten:
            await self.recorder.flush()
            self._may_have_work = True
            return False
        found, throttled = self._last_claim
        if throttled:
            return False
        if found:
            self._may_have_work = True  # look once more rather than wait for the poll
            return False
        return True

    async def _sleep(self, timeout: float | None = None) -> None:
        """Waits for an event, a freed slot, the next wake-up time or the poll interval, whichever is first."""
        loop = asyncio.get_running_loop()
        pause = self.settings.poll_interval if timeout is None else timeout
        if self._wake_at is not None:
            pause = min(pause, max(self._wake_at - loop.time(), 0.0))
        try:
            # asyncio.timeout rather than wait_for: no task is made per sleep, and the loop sleeps often.
            async with asyncio.timeout(pause):
                await self._wake.wait()
        except TimeoutError:
            # A poll: the backup for a missed notification, and how deferred jobs are noticed.
            self._may_have_work = True
            if self._wake_at is not None and self._wake_at <= loop.time():
                self._wake_at = None
        self._wake.clear()

    def _wake_after(self, seconds: float) -> bool:
        """Sets the next wake-up time; True if it moved earlier (a sleep under way was timed for later)."""
        at = asyncio.get_running_loop().time() + max(seconds, 0.0)
        if self._wake_at is None or at < self._wake_at:
            self._wake_at = at
            return True
        return False

    # --- running jobs -------------------------------------------------------------------------------------
    def _start(self, claimed: ClaimedJob, claimed_at: float) -> None:
        if claimed.id in self.running:
            # Its earlier claim was undone by a database crash (claims commit without waiting for the disk) and
            # this worker took the job again: the run under way stands for both, and its outcome settles it.
            log.warning("claimed a job it is already running; keeping the run under way", job_id=claimed.id)
            return
        job = Job(
            id=claimed.id,
            entrypoint=claimed.entrypoint,
            payload=claimed.payload,
            priority=claimed.priority,
            attempts=claimed.attempts,
            headers=decode_headers(claimed.headers),
            created_at=claimed.created_at,
            execute_after=claimed.execute_after,
            picked_at=claimed.picked_at,
        )
        context = Context(
            self.resources,
            bind_log=partial(
                log.bind, entrypoint=job.entrypoint, job_id=job.id, attempt=job.attempts, pid=self.info.pid
            ),
        )
        run = JobRun(job, self.handlers[job.entrypoint], context, claimed_at, self._executor, claimed.lost_runs)
        self.running[job.id] = run
        self.jobs_started += 1
        if claimed.cancel_requested:
            run.stop_reason = "cancel"
            context.cancelled.set()
        if self.metrics is not None:
            # Due time to start, on the database clock (both times come from it), plus the local wait since.
            due = max(job.execute_after, job.created_at)
            latency = (job.picked_at - due).total_seconds() + time.monotonic() - claimed_at
            self.metrics.job_started(job.entrypoint, latency)
        run.task = asyncio.get_running_loop().create_task(run.run())
        run.task.add_done_callback(partial(self._job_done, run))

    def _job_done(self, run: JobRun, task: asyncio.Task[Outcome]) -> None:
        if task.cancelled():
            # Cancelled before its first step, so run() never saw it: settle it here all the same.
            outcome: Outcome = (
                Requeued(run.job.id, "release") if run.stop_reason != "cancel" else Finished(run.job.id, "canceled")
            )
        elif task.exception() is not None:
            log.error("job run failed inside pgqd; releasing the job", job_id=run.job.id, error=repr(task.exception()))
            outcome = Requeued(run.job.id, "release")
        else:
            outcome = task.result()
        self.recorder.add(outcome)
        self.running.pop(run.job.id, None)
        # A freed slot matters only if there may be work to claim, or when the last job ends (drain, stop).
        if self._may_have_work or self._queue_deep or not self.running:
            self._wake.set()
        if outcome.error is not None or self._log_every_job:
            _log_outcome(run, outcome)
        if self.metrics is not None:
            self.metrics.job_ended(run.job.entrypoint, outcome, run.timing()[1])
        if self._on_outcome is not None:
            self._on_outcome(run.job, outcome)

    async def _finish_running(self) -> None:
        """Graceful drain: wait up to the grace period, then cancel what is left and release it."""
        if self.running:
            log.info("draining", running=len(self.running), grace=self._grace, worker_id=self.worker_id)
            tasks = [run.task for run in self.running.values() if run.task is not None]
            everything = asyncio.ensure_future(asyncio.wait(tasks))
            fast = asyncio.ensure_future(self._stop_fast.wait())
            try:
                await asyncio.wait([everything, fast], timeout=self._grace, return_when=asyncio.FIRST_COMPLETED)
            finally:
                everything.cancel()
                fast.cancel()
        leftovers = list(self.running.values())
        for run in leftovers:
            run.stop("shutdown")
        tasks = [run.task for run in leftovers if run.task is not None]
        if tasks:
            log.warning("released unfinished jobs", count=len(tasks), worker_id=self.worker_id)
            await asyncio.wait(tasks, timeout=5.0)

    # --- events -------------------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if event.kind in ("enqueued", "slot"):
            if event.entrypoints and not any(name in self.handlers for name in event.entrypoints):
                return
            if event.due_in:
                if self._wake_after(event.due_in):
                    # The current sleep was timed before this due time was known: start it again.
                    self._wake.set()
                return
            self._may_have_work = True
            self._wake.set()
        elif event.kind == "cancel":
            for job_id in event.ids:
                self._cancel(job_id)
        elif event.kind == "reconnected":
            if self.metrics is not None:
                self.metrics.reconnected()
            self._may_have_work = True
            self._wake.set()

    def _cancel(self, job_id: int) -> None:
        run = self.running.get(job_id)
        if run is not None:
            log.info("cancelling job", job_id=job_id, entrypoint=run.job.entrypoint)
            run.stop("cancel")

    # --- liveness -----------------------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        every = self.settings.beat_every
        last_rescue = last_prune = 0.0
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            if self.metrics is not None:
                self.metrics.publish()
            try:
                for job_id in await self.backend.heartbeat(self.worker_id, self.info):
                    self._cancel(job_id)
                if now - last_rescue >= self.settings.worker_timeout / 2:
                    last_rescue = now
                    rescued = await self.backend.rescue_stale(self.settings.worker_timeout)
                    if self.metrics is not None:
                        self.metrics.jobs_rescued("stale_worker", len(rescued))
                    if rescued:
                        log.warning("rescued jobs of silent workers", count=len(rescued), job_ids=rescued[:20])
                if self.settings.retention is not None and now - last_prune >= 60:
                    pruned = await self.backend.prune_log(self.settings.retention, 10_000)
                    last_prune = now if pruned < 10_000 else 0.0
            except BackendUnavailable as exc:
                self._database_unavailable(exc)
                self._reconcile = True

    async def _release_stray(self) -> None:
        keep = set(self.running) | self.recorder.unwritten_ids()
        released = await self.backend.release_stray(self.worker_id, sorted(keep))
        if self.metrics is not None:
            self.metrics.jobs_rescued("lost_claim", len(released))
        self._reconcile = False
        if released:
            log.warning("released jobs claimed while the connection was lost", job_ids=released)

    def _database_unavailable(self, exc: BackendUnavailable) -> None:
        if self.metrics is not None:
            self.metrics.database_error()
        # Each failed call, at debug: the backend logs one line when an outage starts and one when it ends.
        log.debug("database unavailable, retrying", error=str(exc), worker_id=self.worker_id)

    async def _retry_until_stopped(self, call: Callable[[], Any]) -> Any:
        backoff = Backoff()
        while True:
            if self._stopping:
                raise _Stopped
            try:
                return await call()
            except BackendUnavailable as exc:
                self._database_unavailable(exc)
                await self._sleep(backoff.next())


class _Stopped(Exception):
    """Stop was requested before the worker could start."""


def _log_outcome(run: JobRun, outcome: Outcome) -> None:
    _, duration = run.timing()
    status = outcome.status if isinstance(outcome, Finished) else outcome.kind
    fields = {"outcome": status, "duration": round(duration, 6)}
    if outcome.error is not None:
        run.context.log.warning("job failed", error=f"{outcome.error.type}: {outcome.error.message}", **fields)
    else:
        run.context.log.debug("job done", **fields)
