"""What the dispatch loop knows between two turns, and the step it takes next.

The loop (``Worker._dispatch``) asks ``DispatchState.next_step`` what to do, does it, and asks again. Everything
that happens (a notification, a claim's reply, a finished job, a heartbeat, a lost database) is told to the state
through one of its methods, which change its fields; the engine only reads them. All of it is pure: tested table
by table in tests/test_dispatch_state.py, without a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pgqd.models import ClaimedJob

# A worker keeps a second claim on its way while the jobs of the last one run, so neither the claim's round trip
# nor the jobs wait for each other. Measured with no-op jobs (docs/performance.md): 1 process at batch 10 went
# from 9.1k to 12.5k jobs/s, 2 processes at batch 100 from 39k to 46k.
CLAIMS_IN_FLIGHT = 2

Step = Literal[
    "stop",  # stop was asked for
    "wait",  # something under way must end first: sleep until an event
    "idle",  # nothing to claim now: in drain mode see whether all is done, else sleep until an event
    "retire",  # the job budget (max_jobs) is spent: claim nothing more
    "reconcile",  # a claim's reply may have been lost: release the jobs marked as ours that do not run
    "flush",  # a suspect ran alone: write its outcome before anything else is claimed
    "claim_suspect",  # suspects wait: claim one to run alone
    "run_alone",  # the suspect claimed is the only job left: run it
    "let_start",  # jobs just started have not run yet: let them, as a claim for what they hold would be short
    "claim",  # claim a batch
]


@dataclass
class DispatchState:
    """The dispatch loop's flags and counters."""

    # Claiming.
    may_have_work: bool = True  # an event or a full claim says a claim may find jobs
    claiming: int = 0  # claims under way
    reserved: int = 0  # slots promised to the claims under way, and to the hand-overs (of them)...
    handing: int = 0  # ...kept for the next jobs of limited entrypoints that outcome writes may claim
    claims_sent: int = 0  # claims numbered in the order sent...
    claims_settled: int = 0  # ...and the number of the newest one whose reply was applied
    starts_pending: bool = False  # jobs were started that have not had a turn of the event loop yet
    queue_deep: bool = False  # the newest settled claim came back full
    last_found: int = 1  # jobs the newest settled claim found...
    last_throttled: bool = False  # ...and whether a rate limit held jobs back
    wake_at: float | None = None  # loop time of the next wake-up: a due job or a limit's gate, if known...
    due_at: float | None = None  # ...and of the next due job alone
    reconcile: bool = False  # the database was lost: jobs of a lost claim reply may be marked as ours
    heartbeat_ok: bool = True  # the last heartbeat is recent enough to take more work
    stopping: bool = False
    # Suspects: jobs present in two worker deaths, each run alone in its process (docs/reliability.md).
    suspects: bool = False  # told that suspects wait to run alone
    more_suspects: bool = False  # the isolated claim said more wait after the one it took
    suspect_claimed: ClaimedJob | None = None  # claimed to run alone, waiting for the jobs under way to end
    suspect_running: int | None = None  # the id of the suspect running alone
    flush_first: bool = False  # the suspect that ran alone ended: its outcome goes out before any claim

    def next_step(self, running: int, free: int, full: int, budget: int | None = None) -> Step:
        """``running``: jobs running now; ``free``: slots neither running nor promised (to a claim, or kept for a
        hand-over); ``full``: the slots a full claim asks for (the batch size, or the concurrency when that is
        smaller); ``budget``: jobs this worker may still start (``max_jobs`` less those started and promised),
        None for no limit."""
        if self.stopping:
            return "stop"
        if self.suspect_running is not None:
            return "wait"
        if self.suspect_claimed is not None:
            if running or self.claiming or self.handing:
                return "wait"
            # A claim reply lost with the database may have left jobs picked by this worker that it never saw.
            # Released first: beside them the suspect would not run alone, and a death it caused would be charged
            # to none of them (it would run once more than its max_worker_deaths allow, its neighbours would each
            # count a death).
            return "reconcile" if self.reconcile else "run_alone"
        if self.flush_first:
            return "flush"
        if not self.heartbeat_ok:
            return "wait"
        if self.suspects:
            return "claim_suspect" if not self.claiming else "wait"
        # While claims come back full the queue is deep: the next claim goes out before the last one returns,
        # rather than waiting for it to say there is more.
        may_claim = self.may_have_work or (self.claiming > 0 and self.queue_deep)
        if free <= 0 or not may_claim or self.claiming >= CLAIMS_IN_FLIGHT:
            return "idle"
        if free < full and self.starts_pending:
            # A claim that just came back started its jobs, but they take their first step only in the next turn
            # of the loop, where most end (quick jobs) and free their slots. Claiming before that would ask for
            # what long jobs leave: at batch 10 and concurrency 32, with six slots on slow jobs, one claim in six
            # was for 6 jobs, at the price of a full one.
            return "let_start"
        if self.claiming and 2 * free < full:
            # A second claim goes out only for half a batch or more. A claim for a few slots costs the database
            # almost as much as a full one (at batch 10 and concurrency 32 every fourth claim was for 2 jobs), and
            # the claim under way is back within a round trip, when the next one may ask for whatever is free by
            # then. Not only for a full batch: slots long jobs hold stay held, and at batch 100 and concurrency
            # 200 one slow job kept a second claim from ever going out.
            return "idle"
        if self.reconcile:
            # Jobs of a claim still on its way would look stray: settle once none is.
            return "reconcile" if not self.claiming else "wait"
        if budget is not None and budget <= 0:
            return "retire"
        return "claim"

    # --- events: each says what happened, and changes the fields it concerns ---------------------------------
    def stop_requested(self) -> None:
        self.stopping = True

    def claim_sent(self, wanted: int) -> int:
        """Books a claim of ``wanted`` jobs as under way; returns its number."""
        # Cleared before the claim rather than after it: an event that arrives while the claim runs (a job
        # committed after its snapshot) sets it again and is not lost.
        self.may_have_work = False
        self.reserved += wanted
        self.claiming += 1
        self.claims_sent += 1
        return self.claims_sent

    def claim_ended(self, wanted: int) -> None:
        """A claim came back, or failed: its slots are no longer promised."""
        self.reserved -= wanted
        self.claiming -= 1

    def may_hand_over(self, budget: int | None) -> bool:
        """Whether a slot freed now may be kept for the next job of its entrypoint, claimed by the write of the
        outcome that frees it. Only while the worker's claims come back full: a busy worker leaves the 'slot'
        notices to others (``Worker._on_event``), so the slot would come back to it anyway, at the price of a claim
        with limits; a worker with time to spare announces the slot, and an idle fleet shares the limit. Not
        while the worker stops, cannot vouch for what it holds, runs or waits to run a suspect alone, or has
        spent its job budget (``budget`` as ``next_step`` takes it)."""
        return (
            self.queue_deep
            and not self.stopping
            and self.heartbeat_ok
            and not self.reconcile
            and not self.suspects
            and self.suspect_claimed is None
            and self.suspect_running is None
            and not self.flush_first
            and (budget is None or budget > 0)
        )

    def hand_over_kept(self) -> None:
        """A freed slot is kept for its entrypoint's next job until the write of the outcome says."""
        self.reserved += 1
        self.handing += 1

    def hand_over_settled(self, count: int) -> None:
        """Writes of outcomes settled ``count`` kept slots: filled by their successors, or free again."""
        self.reserved -= count
        self.handing -= count

    def jobs_started(self) -> None:
        """Jobs were started: they run from the next turn of the event loop."""
        self.starts_pending = True

    def loop_turned(self) -> None:
        """The loop let the jobs started take their first step."""
        self.starts_pending = False

    def claim_failed(self) -> None:
        """The database was lost during a claim: its reply may have been lost with jobs marked as ours."""
        self.reconcile = True
        self.may_have_work = True

    def settle(self, number: int, found: int, wanted: int, throttled: bool, suspects: bool = False) -> None:
        """Applies what claim ``number`` found. With two claims under way, the one sent last saw the newest
        state of the queue: an older one that returns after it must not overwrite what it said."""
        if found >= wanted:
            self.may_have_work = True
        if number > self.claims_settled:
            self.claims_settled = number
            self.queue_deep = found >= wanted
            self.last_found, self.last_throttled = found, throttled
        if suspects:
            self.suspects = True

    def suspect_claim_sent(self) -> None:
        self.suspects = False

    def suspect_claim_failed(self) -> None:
        self.reconcile = True  # it may have been claimed: the reconcile step puts it back

    def suspect_taken(self, job: ClaimedJob, more: bool) -> None:
        """An isolated claim took ``job``; ``more``: other suspects wait after it."""
        self.suspect_claimed = job
        self.more_suspects = more

    def suspect_started(self) -> ClaimedJob | None:
        """The suspect claimed starts now, alone; returns it (None if it was cancelled meanwhile)."""
        job, self.suspect_claimed = self.suspect_claimed, None
        if job is not None:
            self.suspect_running = job.id
        return job

    def suspect_dropped(self) -> ClaimedJob | None:
        """The suspect claimed will not run (cancelled, or the worker stops); returns it."""
        job, self.suspect_claimed = self.suspect_claimed, None
        return job

    def job_ended(self, job_id: int) -> None:
        if self.suspect_running == job_id:
            # Its outcome is written before anything else is claimed: until then the job is still picked by this
            # worker in the database.
            self.suspect_running = None
            self.flush_first = True
            self.suspects = self.suspects or self.more_suspects

    def flushed_first(self) -> None:
        self.flush_first = False
        self.may_have_work = True

    def work_announced(self) -> None:
        """A notification, a poll, a reconnection or an unfinished drain: a claim may find jobs."""
        self.may_have_work = True

    def nothing_claimable(self) -> None:
        """Every entrypoint a claim would ask for has its concurrency limit reached: filled by the worker's own
        jobs, or reported reached by a claim (``LimitGates``). No claim can take anything until a slot frees, which
        announces work again (the worker's own written outcome, a 'slot' notice, jobs put back), or a gate's time
        or a poll comes. A worker that serves only limited entrypoints otherwise sent a claim with limits for every
        notification of an enqueue, each finding its limits full."""
        self.may_have_work = False

    def suspects_announced(self) -> bool:
        """The heartbeat says suspects wait; True if that is news."""
        news = not self.suspects
        self.suspects = True
        return news

    def heartbeat_recorded(self) -> bool:
        """A heartbeat was written; True if claims were stopped for want of one and may resume."""
        resumed = not self.heartbeat_ok
        self.heartbeat_ok = True
        return resumed

    def heartbeat_stale(self) -> bool:
        """The last heartbeat written is too old to take work; True if that is news."""
        news = self.heartbeat_ok
        self.heartbeat_ok = False
        return news

    def database_lost(self) -> None:
        """A heartbeat or claim failed: claims that were under way may have left jobs marked as ours."""
        self.reconcile = True

    def reconnected(self) -> None:
        """The events connection is back. The database may have lost what this worker wrote before the outage
        (a failover to a standby that had not received it): jobs it finished may be back as picked by it, so
        it releases what it does not run, and looks for work."""
        self.reconcile = True
        self.may_have_work = True

    def reconciled(self) -> None:
        self.reconcile = False

    def wake_at_or_before(self, at: float, due: bool = False) -> bool:
        """Sets the next wake-up time, loop time ``at``: when a deferred job is due (``due``), or when a limit's
        gate opens (a rate limit's tokens, a limit row another claim held). True if it moved earlier."""
        if due and (self.due_at is None or at < self.due_at):
            self.due_at = at
        if self.wake_at is None or at < self.wake_at:
            self.wake_at = at
            return True
        return False

    def slept(self, now: float) -> bool:
        """A sleep ran out without an event. True if every limited entrypoint is worth a look again: the sleep
        was a poll (the backup for a missed notification), or a deferred job is due, which sends no notification.
        False when only a gate's time came: that gate opens by itself (``LimitGates.request``), and the others
        stay closed. Reopening them all there made a worker ask for every limit, those full with its own jobs
        too, at each of a rate limit's tokens: 1,057 of the realistic drain's 9,500 claims named all three of its
        limited entrypoints (192 with this)."""
        self.may_have_work = True
        if self.wake_at is None or self.wake_at > now:
            return True
        due = self.due_at is not None and self.due_at <= now
        if due:
            self.due_at = None
        # A later due job's wake-up, behind the gate's that came first, is kept.
        self.wake_at = self.due_at
        return due
