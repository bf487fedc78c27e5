"""Where a worker's next claim starts reading each entrypoint's ready jobs (migration 0017).

A claimed job's entry stays at the head of the ready index until a vacuum removes it, and a claim that reads
from the head steps over every one of them: between two vacuums of a deep queue, tens of thousands. A claim
that starts where the worker's previous claim of that entrypoint started skips them: the entries before that
point were claimed, are held by another claim, or are jobs put back or committed since.

Those last ones are why a start is only a hint, and is dropped:
- after a claim that came back short: the queue may hold work the bounded read cannot see, so the next claim
  reads everything;
- after the worker's own requeue (a retry due at once, a release): that job goes back with its old id;
- every ``WHOLE_READ_EVERY`` seconds: a job another worker put back, a rescued job, or one whose enqueue
  committed after a later-numbered job had been claimed, waits that long at most behind newer jobs of its
  priority.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# A whole read costs what the claims since the last vacuum left at the head: 0.3 ms at 80,000 of them
# (benchmarks/ready_head.py), so twice a second is nothing beside a busy worker's hundreds of claims.
WHOLE_READ_EVERY = 0.5


@dataclass
class ReadyScanStarts:
    """One worker's starts: per entrypoint, the priority and id its last claim of that entrypoint started at."""

    clock: Callable[[], float] = time.monotonic
    starts: dict[str, tuple[int, int]] = field(default_factory=dict)
    whole_read_at: float = float("-inf")

    def for_claim(self, entrypoints: Sequence[str]) -> tuple[list[int | None] | None, list[int | None] | None]:
        """The claim's start arrays (priorities, ids) in the request's order; (None, None) for a whole read."""
        now = self.clock()
        if not self.starts or now - self.whole_read_at >= WHOLE_READ_EVERY:
            self.starts.clear()
            self.whole_read_at = now
            return None, None
        found = [self.starts.get(name) for name in entrypoints]
        if not any(found):
            return None, None
        return [s[0] if s else None for s in found], [s[1] if s else None for s in found]

    def claimed(self, started: dict[str, tuple[int, int]], complete: bool) -> None:
        """A claim came back: ``started`` holds where it started per entrypoint it took ready jobs of;
        ``complete`` is false when it came back short."""
        if complete:
            self.starts.update(started)
        else:
            self.forget()

    def forget(self) -> None:
        """The next claim reads every entrypoint's ready jobs from the start."""
        self.starts.clear()
