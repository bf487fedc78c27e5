"""The worker engine: claims jobs, runs them with bounded concurrency, records outcomes, stays alive.

One task owns each long-lived duty: the dispatch loop (claiming), the outcome recorder (flushing) and the
heartbeat (liveness, cancellation requests, rescue of dead workers' jobs). Events from the
database (new jobs, cancellations, freed slots) only set flags and wake the dispatch loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from pgqd.backend.base import Backend, Subscription
from pgqd.backoff import Backoff
from pgqd.entrypoint import Entrypoint
from pgqd.errors import BackendUnavailable
from pgqd.job import Job
from pgqd.models import (
    ClaimedJob,
    EntrypointLimit,
    Event,
    Finished,
    HandOver,
    HeartbeatReply,
    Outcome,
    Recorded,
    Unfinished,
    WorkerInfo,
)
from pgqd.worker.dispatch_state import DispatchState, Step
from pgqd.worker.execution import JobRun, PreparedHandler
from pgqd.worker.limit_gates import LimitGates
from pgqd.worker.liveness import Liveness
from pgqd.worker.outcomes import OutcomeRecorder
from pgqd.worker.settings import WorkerSettings
from pgqd.worker.telemetry import NO_METRICS, EngineMetrics
from pgqd.worker.wakeup import Wakeup

log = structlog.get_logger("pgqd.worker")

__all__ = ["Worker", "WorkerSettings"]


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
        metrics: EngineMetrics = NO_METRICS,
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
        self.gates = LimitGates(self.limits, batch=self.settings.batch_size)
        # Jobs of concurrency-limited entrypoints that ended here, whose outcomes (and so freed slots) are not
        # written yet, by id: their entrypoints are asked for again as soon as they are.
        self._slots_freeing: dict[int, str] = {}
        # Concurrency-limited entrypoints without a rate limit: a slot one of their jobs frees here is kept for the
        # entrypoint's next job, which the write of the outcome claims for this worker (HandOver), by id of the
        # job that ended. So a limited entrypoint with a backlog costs no claim with limits per job.
        self._hand_over_limits = {
            lim.name: lim.concurrency for lim in self.limits if lim.concurrency > 0 and lim.rate_per_second <= 0
        }
        self._handing: dict[int, str] = {}
        self._concurrency = {lim.name: lim.concurrency for lim in self.limits if lim.concurrency > 0}
        # The slots this worker's jobs hold, by concurrency-limited entrypoint: from the job's start until the
        # write of its outcome frees the slot or hands it over. Kept as jobs start and outcomes are written, as
        # each claim reads it (``_without_limits_filled_here``).
        self._slots_held: Counter[str] = Counter()
        self._asked_all = True  # the newest claim settled named every entrypoint (none was closed)
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
        self._loop: asyncio.AbstractEventLoop  # the loop of the current ``run``
        self.jobs_started = 0
        self.state = DispatchState()
        self._wake = Wakeup()
        self._stop_fast = asyncio.Event()
        self._grace = self.settings.shutdown_timeout
        self._executor_closed = False
        self._executor = self._new_executor()
        self.liveness = Liveness(
            backend,
            self.settings,
            self.info,
            lambda: self.worker_id,
            metrics,
            on_reply=self._heartbeat_reply,
            on_unavailable=self._heartbeat_failed,
        )
        self._slot_entrypoints = frozenset(lim.name for lim in self.limits if lim.concurrency > 0)
        self.recorder = OutcomeRecorder(
            backend,
            lambda: self.worker_id,
            sorted(self._slot_entrypoints),
            keep_payload=[h.entrypoint.name for h in self.handlers.values() if h.entrypoint.keep_payload],
            max_batch=self.settings.flush_max_batch,
            linger=self.settings.flush_linger,
            on_unavailable=self._database_unavailable,
            after_flush=self._flushed,
            on_written=self._outcomes_written,
            hand_over=self._hand_over_of if self._hand_over_limits else None,
            # Jobs may be marked as this worker's that it does not know of: it releases what it does not run.
            on_hand_over_unknown=lambda: self.state.database_lost(),
        )
        self._claim_after_flush = False
        self._draining = False

    # --- control ------------------------------------------------------------------------------------------
    def stop(self, grace: float | None = None) -> None:
        """Stop claiming; give running jobs ``grace`` seconds (default ``shutdown_timeout``) to finish, then
        cancel them and release them to the queue. Calling it again stops at once."""
        if self.state.stopping:
            self._stop_fast.set()
        self.state.stop_requested()
        if grace is not None:
            self._grace = grace
            if grace <= 0:
                self._stop_fast.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self.state.stopping

    # --- main loop ----------------------------------------------------------------------------------------
    async def run(self, *, drain: bool = False) -> None:
        # A worker may run again after a drain (a test moving a manual clock forward): it starts afresh.
        self.state = DispatchState(stopping=self.state.stopping)
        # Kept rather than looked up per job and per claim: on Python 3.11 each lookup costs a getpid() system call.
        self._loop = asyncio.get_running_loop()
        if self._executor_closed:
            self._executor = self._new_executor()
        subscription: Subscription | None = None
        try:
            self.worker_id = await self._retry_until_stopped(lambda: self.backend.register_worker(self.info))
            self.liveness.last_heartbeat = time.monotonic()
            self.registered.set()
            subscription = await self._retry_until_stopped(lambda: self.backend.subscribe(self._on_event))
            async with asyncio.TaskGroup() as group:
                duties = [group.create_task(self.recorder.run()), group.create_task(self.liveness.run())]
                try:
                    self._draining = drain
                    await self._dispatch(drain)
                    await self._finish_running()
                finally:
                    # Not in the middle of a write: one that handed slots over must live to start or release the
                    # jobs it claimed for this worker, which nothing else would know of.
                    async with self.recorder.between_flushes():
                        for duty in duties:
                            duty.cancel()
        except _Stopped:
            pass
        finally:
            written = await self.recorder.close(timeout=max(self.settings.worker_timeout / 2, 1.0))
            if not written:
                log.error("outcomes left unwritten", count=self.recorder.unwritten, worker_id=self.worker_id)
            elif self.worker_id and self.state.reconcile:
                # Stopped before it could release what a lost claim reply left in its name: done now, or the rescue
                # of this worker's jobs once it is gone would count a death for each. Not when the database just
                # failed the outcomes' write: a call then would most likely wait out its timeout for nothing.
                with contextlib.suppress(BackendUnavailable):
                    await self._release_stray()
            self.metrics.publish()
            if self.worker_id:
                with contextlib.suppress(BackendUnavailable):
                    await self.backend.deregister_worker(self.worker_id)
            if subscription is not None:
                await subscription.close()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor_closed = True

    def _new_executor(self) -> ThreadPoolExecutor:
        self._executor_closed = False
        return ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="pgqd-handler")

    async def _dispatch(self, drain: bool) -> None:
        """Takes the steps ``DispatchState.next_step`` names until stopped (or, with ``drain``, until done)."""
        claims: set[asyncio.Task[None]] = set()
        backoff = Backoff()
        state = self.state
        full = min(self.settings.batch_size, self.settings.concurrency)
        try:
            while True:
                self._check_heartbeat()
                free = self.settings.concurrency - len(self.running) - state.reserved
                budget = self._budget()
                step = state.next_step(len(self.running), free, full, budget)
                if step == "claim":
                    limits, sent_at = self.gates.request(self._loop.time())
                    if self._concurrency:
                        limits = self._without_limits_filled_here(limits)
                    if not limits:
                        state.nothing_claimable()
                        await self._sleep()
                        continue
                    wanted = min(self.settings.batch_size, free, budget if budget is not None else free)
                    number = state.claim_sent(wanted)
                    claim = self._claim(number, wanted, limits, sent_at, drain, backoff)
                    task = self._loop.create_task(claim)
                    claims.add(task)
                    task.add_done_callback(claims.discard)
                    continue
                if step == "stop":
                    return
                if step == "idle":
                    if drain and not state.claiming and not self.running:
                        if await self._drained():
                            return
                        if state.may_have_work:
                            continue
                    await self._sleep()
                elif step == "retire":
                    if not state.claiming and not state.handing:
                        self.retiring.set()
                        if drain and not self.running:
                            return  # retired: it may take no more jobs, so it has drained all it can
                    # Nothing to claim until a claim under way settles, or ever once retired: wait for an event
                    # rather than go round again, which would never let the event loop run.
                    await self._sleep()
                elif step == "wait":
                    await self._sleep()
                elif step == "let_start":
                    state.loop_turned()
                    await asyncio.sleep(0)
                elif not await self._database_step(step):
                    await self._sleep(backoff.next())
        finally:
            if claims:
                # Let claims under way finish: their jobs are picked in the database and must run or be released.
                await asyncio.wait(claims)

    def _budget(self) -> int | None:
        """Jobs this worker may still start before it retires (None: no limit)."""
        if not self.settings.max_jobs:
            return None
        return self.settings.max_jobs - self.jobs_started - self.state.reserved

    async def _database_step(self, step: Step) -> bool:
        """The steps that wait for the database; False when it could not be reached."""
        try:
            if step == "reconcile":
                await self._release_stray()
            elif step == "flush":
                await self.recorder.flush()
                self.state.flushed_first()
            elif step == "claim_suspect":
                await self._claim_suspect()
            elif step == "run_alone":
                await self._run_alone()
        except BackendUnavailable as exc:
            self._database_unavailable(exc)
            return False
        return True

    async def _claim(
        self,
        number: int,
        wanted: int,
        limits: tuple[EntrypointLimit, ...],
        sent_at: int,
        drain: bool,
        backoff: Backoff,
    ) -> None:
        """Claim ``number``, for ``wanted`` jobs of the entrypoints of ``limits``, sent at notice ``sent_at``."""
        state = self.state
        loop = self._loop
        try:
            result = await self.backend.claim(self.worker_id, wanted, limits)
        except BackendUnavailable as exc:
            self._database_unavailable(exc)
            state.claim_failed()
            await asyncio.sleep(backoff.next())
            return
        finally:
            # Counted here as the claim ends, not by the task's done callback, which runs a turn of the loop
            # later and would let the loop see a finished claim as still under way.
            state.claim_ended(wanted)
            self._wake.set()
        backoff.reset()
        reopen_in = self.gates.claimed(sent_at, result.closed, loop.time(), result.reached) if result.closed else None
        self.metrics.claimed(len(result.jobs))
        claimed_at = time.monotonic()
        for claimed in result.jobs:
            self._start(claimed, claimed_at)
        if result.jobs:
            state.jobs_started()
        state.settle(number, len(result.jobs), wanted, result.throttled_in is not None, result.suspects)
        if state.claims_settled == number:
            self._asked_all = len(limits) == len(self.limits)
        if result.throttled_in is not None:
            # When its gate opens again: for a rate limit, once a batch's tokens may be there.
            self._wake_after(result.throttled_in if reopen_in is None else max(result.throttled_in, reopen_in))
        if not drain and result.due_in is not None:
            self._wake_after(result.due_in, due=True)

    def _without_limits_filled_here(self, limits: tuple[EntrypointLimit, ...]) -> tuple[EntrypointLimit, ...]:
        """``limits`` less the concurrency-limited entrypoints whose limit this worker's own jobs fill. Its jobs
        that run, and those that ended with their outcomes not written yet, are picked in the database: the limit
        is full fleet-wide, and a claim that names it would probe, lock and count for nothing. A worker holding a
        limit whole is the common case of a small fleet, and such claims came at each of the limit's gate times
        (1 process, batch 10: 420 of the realistic drain's 9,500 claims named a concurrency limit full with the
        worker's own jobs; 113 with this). Empty when its own jobs fill every limit asked for: no claim could take
        anything then, and the worker sends none (``DispatchState.nothing_claimable``)."""
        held, concurrency = self._slots_held, self._concurrency
        kept = tuple(lim for lim in limits if lim.name not in concurrency or held[lim.name] < concurrency[lim.name])
        return kept if len(kept) < len(limits) else limits

    # --- suspects, run alone -----------------------------------------------------------------------
    async def _claim_suspect(self) -> None:
        """Claims one suspect to run alone (other workers may run others at the same time). It waits until the
        jobs under way have ended, and nothing else is claimed meanwhile."""
        state = self.state
        state.suspect_claim_sent()
        try:
            result = await self.backend.claim(self.worker_id, 1, self.limits, isolated=True)
        except BackendUnavailable:
            state.suspect_claim_failed()
            raise
        if result.jobs:
            state.suspect_taken(result.jobs[0], result.suspects)
            log.warning("running a suspect alone", job_id=result.jobs[0].id, worker_id=self.worker_id)

    async def _run_alone(self) -> None:
        """Starts the suspect claimed, now that nothing else runs. Outcomes still buffered go out first: a job
        whose outcome is not written is still picked by this worker, and the suspect would not be alone."""
        if self.recorder.unwritten:
            await self.recorder.flush()
            if self.state.reconcile:
                # The database was lost (a failover may have undone writes) while the outcomes went out: jobs may be
                # picked in this worker's name again. The next step releases them first.
                return
        suspect = self.state.suspect_started()
        if suspect is not None:
            self._start(suspect, time.monotonic())

    async def _drained(self) -> bool:
        """In drain mode, with nothing running or being claimed: done when the last claim found nothing (and
        was not held back by a rate limit) and no outcome waits to be written (a retry must become visible)."""
        state = self.state
        if self.recorder.unwritten:
            await self.recorder.flush()
            state.work_announced()
            return False
        if state.last_throttled:
            return False
        if not self._asked_all:
            # The last claim left closed entrypoints out: only a claim that names them all can say none is left.
            # (One that did, and found their limits full, ends the drain as it always did: what waits for a slot
            # another worker holds is not this drain's to run.)
            self.gates.reopen()
            state.work_announced()
            return False
        if state.last_found:
            state.work_announced()  # look once more rather than wait for the poll
            return False
        return True

    async def _sleep(self, timeout: float | None = None) -> None:
        """Waits for an event, a freed slot, the next wake-up time or the poll interval, whichever is first."""
        loop = self._loop
        state = self.state
        pause = self.settings.poll_interval if timeout is None else timeout
        if state.wake_at is not None:
            pause = min(pause, max(state.wake_at - loop.time(), 0.0))
        # Not woken: a poll (the backup for a missed notification, and how deferred jobs are noticed), or a
        # wake-up time.
        if not await self._wake.wait(loop, pause) and state.slept(loop.time()):
            self.gates.reopen()
        self._wake.clear()

    def _wake_after(self, seconds: float, due: bool = False) -> bool:
        """Sets the next wake-up time, for a deferred job (``due``) or a gate; True if it moved earlier (a sleep
        under way was timed for later)."""
        return self.state.wake_at_or_before(self._loop.time() + max(seconds, 0.0), due)

    # --- running jobs -------------------------------------------------------------------------------------
    def _start(self, claimed: ClaimedJob, claimed_at: float) -> None:
        if claimed.id in self.running:
            # Its earlier claim was undone by a database crash (claims commit without waiting for the disk) and
            # this worker took the job again: the run under way stands for both, and its outcome settles it.
            log.warning("claimed a job it is already running; keeping the run under way", job_id=claimed.id)
            return
        run = JobRun.of_claim(
            claimed,
            self.handlers[claimed.entrypoint],
            self.resources,
            claimed_at,
            self._executor,
            self.info.pid,
            self._job_done,
            worker_id=self.worker_id,
        )
        run.results_source = self.backend
        job = run.job
        self.running[job.id] = run
        if job.entrypoint in self._slot_entrypoints:
            self._slots_held[job.entrypoint] += 1
        self.jobs_started += 1
        if claimed.cancel_requested:
            run.stop_reason = "cancel"
            run.flag_cancelled()
        # Due time to start, on the database clock (both times come from it), plus the local wait since.
        due = max(claimed.execute_after_s, claimed.created_s)
        self.metrics.job_started(job.entrypoint, claimed.picked_s - due + time.monotonic() - claimed_at)
        run.task = self._loop.create_task(run.run())

    def _flushed(self) -> None:
        self.metrics.publish_soon()
        if self._claim_after_flush:
            self._claim_after_flush = False
            self.state.work_announced()
            self._wake.set()

    def _hand_over_of(self, outcomes: Sequence[Outcome]) -> HandOver | None:
        """The slots the write of ``outcomes`` passes on to the next jobs of their entrypoints."""
        if not self._handing or not self.state.may_hand_over(None):
            return None
        wanted = Counter(self._handing[o.job_id] for o in outcomes if o.job_id in self._handing)
        if not wanted:
            return None
        return HandOver(dict(wanted), {name: self._hand_over_limits[name] for name in wanted})

    def _outcomes_written(self, outcomes: Sequence[Outcome], written: Recorded) -> None:
        freed: set[str] = set()
        if self._slots_freeing:
            freeing = Counter(self._slots_freeing.pop(o.job_id) for o in outcomes if o.job_id in self._slots_freeing)
            self._slots_held.subtract(freeing)
            freed = set(freeing)
        if self._handing:
            handed = Counter(self._handing.pop(o.job_id) for o in outcomes if o.job_id in self._handing)
            if handed:
                self._slots_held.subtract(handed)
                self.state.hand_over_settled(handed.total())
                taken = Counter(job.entrypoint for job in written.successors)
                # Slots no job took (nothing queued, a pause, a limit lowered): free like any other.
                freed |= {name for name, count in handed.items() if taken[name] < count}
                self._wake.set()
        if written.successors:
            self._take_successors(written.successors)
        if freed:
            # This worker's jobs freed these slots: it asks for them in its next claim, without waiting for the
            # 'slot' notice (which a worker whose claims come back full does not act on, see _on_event).
            self.gates.reopen(freed)
            self.state.work_announced()
            self._wake.set()

    def _take_successors(self, successors: Sequence[ClaimedJob]) -> None:
        self.metrics.claimed(len(successors))
        if self.state.stopping:
            # Handed over by a write that went out before the stop: back to the queue, their attempts not counted.
            for job in successors:
                self.recorder.add(Unfinished(job.id, "release"))
            return
        claimed_at = time.monotonic()
        for job in successors:
            self._start(job, claimed_at)
        self.state.jobs_started()

    def _job_done(self, run: JobRun, outcome: Outcome) -> None:
        self.recorder.add(outcome)
        name = run.job.entrypoint
        if name in self._hand_over_limits and self.state.may_hand_over(self._budget()):
            self._handing[run.job.id] = name
            self.state.hand_over_kept()
        elif name in self._slot_entrypoints:
            self._slots_freeing[run.job.id] = name
        self.running.pop(run.job.id, None)
        state = self.state
        if not self.running and not state.queue_deep and (not state.may_have_work or self._slots_freeing):
            # Idle, and no work in sight to share a flush with: write the outcome now rather than after the
            # linger, as a job waiting for this one (a workflow's next step) is released only by that write.
            # A drain then claims again for what it released rather than end first; otherwise the
            # announcement of the released jobs wakes the worker, as any enqueue does. Slots of limited
            # entrypoints wait for the write too, whatever notifications say: a worker whose own jobs filled
            # every limit it serves claims nothing until it frees them (DispatchState.nothing_claimable).
            self._claim_after_flush = self._draining
            self.recorder.flush_soon()
        state.job_ended(run.job.id)
        # A freed slot matters only if there may be work to claim, or when the last job ends (drain, stop).
        if state.may_have_work or state.queue_deep or not self.running:
            self._wake.set()
        if outcome.error is not None or self._log_every_job:
            run.log_outcome(outcome)
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
        suspect = self.state.suspect_dropped()
        if suspect is not None:
            self.recorder.add(Unfinished(suspect.id, "release"))  # back to the suspects, its attempt not counted
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
            if event.kind == "slot" and self.state.queue_deep:
                # Busy with a backlog, this worker claims again soon anyway; the worker whose job freed the slot
                # asks for it in its next claim (_outcomes_written), and this one within REOPEN_AFTER. Were every busy
                # worker to ask on every freed slot, each slot would cost the fleet a claim with limits per
                # worker, all but one of them finding the limit full again.
                return
            if event.due_in:
                if self._wake_after(event.due_in, due=True):
                    # The current sleep was timed before this due time was known: start it again.
                    self._wake.set()
                return
            # A producer's new jobs say their priority; jobs put back (which may free slots) do not.
            self.gates.reopen(event.entrypoints, new_jobs=event.kind == "enqueued" and event.top_priority is not None)
            self.state.work_announced()
            self._wake.set()
        elif event.kind == "cancel":
            for job_id in event.ids:
                self._cancel(job_id)
        elif event.kind == "reconnected":
            self.metrics.reconnected()
            self.state.reconnected()
            self.gates.reopen()
            self._wake.set()

    def _cancel(self, job_id: int) -> None:
        waiting = self.state.suspect_claimed
        if waiting is not None and waiting.id == job_id:
            # A suspect waiting to run alone: it never starts.
            self.state.suspect_dropped()
            self.recorder.add(Finished(job_id, "canceled"))
            self._wake.set()
            return
        run = self.running.get(job_id)
        if run is not None:
            log.info("cancelling job", job_id=job_id, entrypoint=run.job.entrypoint)
            run.stop("cancel")

    # --- liveness -----------------------------------------------------------------------------------------
    def _heartbeat_reply(self, reply: HeartbeatReply) -> None:
        for job_id in reply.cancel:
            self._cancel(job_id)
        if self.state.heartbeat_recorded():
            log.info("heartbeat recorded again: claiming", worker_id=self.worker_id)
            self._wake.set()
        if reply.suspects and self.state.suspects_announced():
            self._wake.set()

    def _heartbeat_failed(self, exc: BackendUnavailable) -> None:
        self._database_unavailable(exc)
        self.state.database_lost()

    def _check_heartbeat(self) -> None:
        """Stops the claims once the last recorded heartbeat is so old that the fleet may soon presume this
        worker dead and hand its jobs to others: it takes no work it might not be able to record."""
        if self.state.heartbeat_ok and self.liveness.stale() and self.state.heartbeat_stale():
            log.warning("no heartbeat recorded for too long: claiming nothing until one is", worker_id=self.worker_id)

    async def _release_stray(self) -> None:
        # Between flushes: a write under way may hand this worker jobs that it starts only once it ends.
        async with self.recorder.between_flushes():
            keep = set(self.running) | self.recorder.unwritten_ids()
            if self.state.suspect_claimed is not None:
                keep.add(self.state.suspect_claimed.id)
            released = await self.backend.release_stray(self.worker_id, sorted(keep))
        self.metrics.jobs_rescued("lost_claim", len(released))
        self.state.reconciled()
        if released:
            # A claim whose reply was lost with the connection, or outcomes the database lost in a failover.
            log.warning("released jobs held in the database but not running here", job_ids=released)

    def _database_unavailable(self, exc: BackendUnavailable) -> None:
        self.metrics.database_error()
        # Each failed call, at debug: the backend logs one line when an outage starts and one when it ends.
        log.debug("database unavailable, retrying", error=str(exc), worker_id=self.worker_id)

    async def _retry_until_stopped(self, call: Callable[[], Any]) -> Any:
        backoff = Backoff()
        while True:
            if self.state.stopping:
                raise _Stopped
            try:
                return await call()
            except BackendUnavailable as exc:
                self._database_unavailable(exc)
                await self._sleep(backoff.next())


class _Stopped(Exception):
    """Stop was requested before the worker could start."""
