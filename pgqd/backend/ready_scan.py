"""Where a worker's next claim starts reading each entrypoint's ready jobs (migration 0017).

A claimed job's entry stays at the head of the ready index until a vacuum removes it, and a claim that reads
from the head steps over every one of them: between two vacuums of a deep queue, tens of thousands. A claim
that starts where the worker's previous claim of that entrypoint started skips them: the entries before that
point were claimed, are held by another claim, or are jobs put back or committed since.

Those last ones are why a start is only a hint, and is dropped:
- after a claim that came back short: the queue may hold work the bounded read cannot see (a lower priority, a
  job put back), so PostgresBackend.claim completes a short claim from a start with a whole read at once, and
  the next claim reads everything too;
- after a notice of jobs put back with their old ids (released, retried, rescued, requeued by an operator,
  released by a workflow), or of new jobs of a higher priority than the start (``p`` in an ``enqueued``
  notice), for those entrypoints; after events were missed (the listener reconnected), for all;
- after the worker's own requeue (a retry due at once, a release): that job goes back with its old id;
- every ``WHOLE_READ_EVERY`` seconds: a job whose enqueue committed after a later-numbered job of its priority had
  been claimed waits that long at most behind newer jobs, and so does a job whose notice was lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from pgqd.models import ClaimedJob

# A whole read costs what the claims since the last vacuum left at the head: a claim of 10 took 0.27 ms more than
# one from a start at 80,000 of them (benchmarks/ready_head.py), so twice a second is nothing beside a busy
# worker's hundreds of claims.
WHOLE_READ_EVERY = 0.5


class ClaimStarts(NamedTuple):
    """What one claim was sent with: the start arrays (priorities, ids; None for a whole read), and the
    generation of the starts they came from."""

    priorities: list[int | None] | None
    ids: list[int | None] | None
    generation: int


@dataclass
class ReadyScanStarts:
    """One worker's starts: per entrypoint, the priority and id its last claim of that entrypoint started at."""

    clock: Callable[[], float] = time.monotonic
    starts: dict[str, tuple[int, int]] = field(default_factory=dict)
    whole_read_at: float = float("-inf")
    # Counts the drops of starts: a claim sent before one must not set again what was dropped when it returns.
    generation: int = 0

    def for_claim(self, entrypoints: Sequence[str]) -> ClaimStarts:
        """The claim's start arrays in the request's order, or a whole read."""
        now = self.clock()
        if not self.starts or now - self.whole_read_at >= WHOLE_READ_EVERY:
            self.starts.clear()
            self.whole_read_at = now
            return ClaimStarts(None, None, self.generation)
        found = [self.starts.get(name) for name in entrypoints]
        if not any(found):
            return ClaimStarts(None, None, self.generation)
        return ClaimStarts([s[0] if s else None for s in found], [s[1] if s else None for s in found], self.generation)

    def claimed(self, sent: ClaimStarts, jobs: Sequence[ClaimedJob], complete: bool) -> None:
        """A claim sent with ``sent`` came back with ``jobs``; ``complete`` is false when it came back short.

        The start of each entrypoint it took jobs of is the first id at the lowest priority it took: the claim
        read the ready jobs in priority then id order. A due deferred job among them, which the claim read from
        another index, sets it lower (a longer next read) or at its own higher priority, as a claim that took
        only jobs of that priority would: the next read skips the lower priorities' jobs of that entrypoint,
        which wait for a short claim or the next whole read."""
        if not complete:
            self.forget()
            return
        if sent.generation != self.generation:
            return
        started: dict[str, tuple[int, int]] = {}
        for job in jobs:
            start = started.get(job.entrypoint)
            if start is None or (job.priority, job.id) < start:
                started[job.entrypoint] = (job.priority, job.id)
        self.starts.update(started)

    def enqueued(self, entrypoints: Sequence[str], top_priority: int | None) -> None:
        """Jobs were queued for ``entrypoints`` (empty: any): with ``top_priority`` the highest priority of new
        jobs, which come after every start in id order; without it, jobs that may lie before a start."""
        names = entrypoints or list(self.starts)
        for name in names:
            start = self.starts.get(name)
            if start is not None and (top_priority is None or top_priority > start[0]):
                del self.starts[name]
                self.generation += 1

    def forget(self) -> None:
        """The next claim reads every entrypoint's ready jobs from the start."""
        self.starts.clear()
        self.generation += 1
