"""What the dispatch loop knows between two turns, and the step it takes next.

The loop (``Worker._dispatch``) asks ``DispatchState.next_step`` what to do, does it, and asks again. Events
(notifications, claim replies, finished jobs, heartbeats) only change fields here and wake the loop.
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
    "retire",  # the job budget (max_jobs) is spent
    "reconcile",  # a claim's reply may have been lost: release what this worker holds but does not run
    "flush",  # a suspect ran alone: write its outcome before anything else is claimed
    "claim_suspect",  # suspects wait: claim one to run alone
    "run_alone",  # the suspect held is the only job left: run it
    "claim",  # claim a batch
]


@dataclass
class DispatchState:
    """The dispatch loop's flags and counters."""

    # Claiming.
    may_have_work: bool = True  # an event or a full claim says a claim may find jobs
    claiming: int = 0  # claims under way
    reserved: int = 0  # slots promised to the claims under way
    claims_sent: int = 0  # claims numbered in the order sent...
    claims_settled: int = 0  # ...and the number of the newest one whose reply was applied
    queue_deep: bool = False  # the newest settled claim came back full
    last_found: int = 1  # jobs the newest settled claim found...
    last_throttled: bool = False  # ...and whether a rate limit held jobs back
    wake_at: float | None = None  # loop time of the next due job or token, if known
    reconcile: bool = False  # the database was lost: jobs of a lost claim reply may be marked as ours
    heartbeat_ok: bool = True  # the last heartbeat is recent enough to take more work
    stopping: bool = False
    # Suspects: jobs present in two worker deaths, each run alone in its process (docs/reliability.md).
    suspects: bool = False  # told that suspects wait to run alone
    more_suspects: bool = False  # the isolated claim said more wait after the one it took
    suspect_claimed: ClaimedJob | None = None  # claimed to run alone, waiting for the jobs under way to end
    suspect_running: int | None = None  # the id of the suspect running alone
    flush_first: bool = False  # the suspect that ran alone ended: its outcome goes out before any claim

    def next_step(self, running: int, free: int, full: int) -> Step:
        """``running``: jobs running now; ``free``: slots neither running nor promised to a claim; ``full``: the
        slots a full claim asks for (the batch size, or the concurrency when that is smaller)."""
        if self.stopping:
            return "stop"
        if self.suspect_running is not None:
            return "wait"
        if self.suspect_claimed is not None:
            return "run_alone" if not running and not self.claiming else "wait"
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
        if self.claiming and free < full:
            # A second claim goes out only for a full batch. A claim for a few slots costs the database almost as
            # much as a full one (at batch 10 and concurrency 32 every fourth claim was for 2 jobs), and the claim
            # under way is back within a round trip, when the next one may ask for whatever is free by then.
            return "idle"
        if self.reconcile:
            # Jobs of a claim still on its way would look stray: settle once none is.
            return "reconcile" if not self.claiming else "wait"
        return "claim"

    def claim_sent(self, wanted: int) -> int:
        """Books a claim of ``wanted`` jobs as under way; returns its number."""
        # Cleared before the claim rather than after it: an event that arrives while the claim runs (a job
        # committed after its snapshot) sets it again and is not lost.
        self.may_have_work = False
        self.reserved += wanted
        self.claiming += 1
        self.claims_sent += 1
        return self.claims_sent

    def settle(self, number: int, found: int, wanted: int, throttled: bool) -> None:
        """Applies what claim ``number`` found. With two claims under way, the one sent last saw the newest
        state of the queue: an older one that returns after it must not overwrite what it said."""
        if found >= wanted:
            self.may_have_work = True
        if number > self.claims_settled:
            self.claims_settled = number
            self.queue_deep = found >= wanted
            self.last_found, self.last_throttled = found, throttled
