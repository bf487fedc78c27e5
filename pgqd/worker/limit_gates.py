"""Which limited entrypoints a worker's next claim asks for.

A claim that names a limited entrypoint probes its work and locks its limit row. With a deep queue of other
work, a worker claims many times a second, and most of those looks at a limited entrypoint find nothing it may
take: the limit is reached, nothing is queued, or the batch is filled with older jobs (by priority and id) before
any of its own. So when a claim reports an entrypoint ``closed`` (see
``ClaimResult.closed``), the worker leaves it out of its claims until one of these says it may be worth a look:

- a notification that names it, or names no entrypoint: jobs were enqueued, or a job of it ended and freed a slot
  (a worker whose claims come back full leaves the freed slots to the worker whose job freed them, see
  ``Worker._on_event``). Not a producer's new jobs, for an entrypoint closed because its concurrency limit is
  reached (``ClaimResult.reached``): more jobs do not open a full limit. Jobs put back (a release, a retry, a
  rescue) may have freed its slots, and their notice opens it;
- the time the claim gave (another claim's hold on the limit row; a rate limit's next token, and then the time
  the tokens of a full batch take to come, so that a claim that names a rate-limited entrypoint takes a batch of
  its jobs rather than one: 50 ms at 200 jobs/s and batch 10);
- the worker's own jobs of a concurrency-limited entrypoint ending (their outcomes written, which freed their
  slots);
- ``REOPEN_AFTER`` seconds in any case, for what sends no notification (a deferred job falling due) and for a
  notification missed;
- a wake-up from a sleep (the worker's poll, or the time a deferred job is due; not the time another gate gave,
  ``DispatchState.slept``), or a reconnection.

Whatever its gate says, the worker also leaves out a concurrency limit that its own jobs fill
(``Worker._without_limits_filled_here``), and claims nothing when they fill every limit it would ask for.

Unlimited entrypoints are always asked for: a claim reads their heads anyway. A claim that goes out while a
notification reopens an entrypoint may come back saying it is closed, from a snapshot taken before the jobs the
notification announced: such a report is ignored, since notifications are numbered and a claim remembers the
number it was sent at.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pgqd.models import EntrypointLimit

# Long enough that a worker claiming a thousand times a second looks at a closed entrypoint a few times a second
# at most; short enough that a deferred job of a limited entrypoint waits for no more than this after it is due.
REOPEN_AFTER = 0.1


@dataclass
class LimitGates:
    """The limited entrypoints left out of claims for now, with the loop time at which each is asked for again."""

    limits: tuple[EntrypointLimit, ...]
    batch: int = 1  # jobs a claim asks for: a rate limit is asked again once a batch's tokens may be there
    closed: dict[str, float] = field(default_factory=dict)
    # Notifications are numbered; an entrypoint remembers the number of the last one that reopened it.
    notices: int = 0
    reopened_at: dict[str, int] = field(default_factory=dict)
    # Of the closed ones, those whose concurrency limit was reached: a producer's new jobs do not reopen them.
    reached: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._limited = {limit.name for limit in self.limits if limit.limited}
        # The seconds a rate limit takes to refill a batch's tokens after the first: added to the wait for its
        # next token.
        self._batch_refill = {
            limit.name: max(min(self.batch, limit.burst) - 1, 0) / limit.rate_per_second
            for limit in self.limits
            if limit.rate_per_second > 0
        }
        self._asks: dict[frozenset[str], tuple[EntrypointLimit, ...]] = {}

    def request(self, now: float) -> tuple[tuple[EntrypointLimit, ...], int]:
        """The limits to claim with at loop time ``now``, and the notice number to hand back to ``claimed``."""
        if self.closed:
            for name in [name for name, until in self.closed.items() if until <= now]:
                del self.closed[name]
                self.reached.discard(name)
        if not self.closed:
            return self.limits, self.notices
        key = frozenset(self.closed)
        asked = self._asks.get(key)
        if asked is None:
            asked = tuple(limit for limit in self.limits if limit.name not in self.closed)
            if not asked:
                if self.reached.issuperset(self.closed):
                    # Every limit is reached: no claim could take anything until a slot frees or a gate's time.
                    return (), self.notices
                # Every entrypoint is closed, yet the worker decided to claim (a notification or a poll said
                # there may be work): ask for all of them rather than for nothing.
                self.closed.clear()
                self.reached.clear()
                return self.limits, self.notices
            if len(self._asks) < 64:
                self._asks[key] = asked
        return asked, self.notices

    def claimed(
        self, sent_at: int, closed: Mapping[str, float | None], now: float, reached: Collection[str] = ()
    ) -> float | None:
        """Applies what a claim sent at notice number ``sent_at`` reported closed (``reached``: of those, the ones
        whose concurrency limit is reached), at loop time ``now``; returns the seconds until the first of them
        that reported a time is asked for again (None: none did)."""
        timed: float | None = None
        for name, wait in closed.items():
            if name not in self._limited or self.reopened_at.get(name, -1) > sent_at:
                continue
            if name in reached:
                self.reached.add(name)
            else:
                self.reached.discard(name)
            if wait is None:
                self.closed[name] = now + REOPEN_AFTER
                continue
            wait = min(wait + self._batch_refill.get(name, 0.0), REOPEN_AFTER)
            self.closed[name] = now + wait
            timed = wait if timed is None else min(timed, wait)
        return timed

    def reopen(self, names: Iterable[str] = (), new_jobs: bool = False) -> None:
        """A notification about ``names`` (every entrypoint when empty), a poll or a reconnection. ``new_jobs``:
        the notice of a producer's new jobs, which leaves closed the entrypoints whose limit is reached."""
        self.notices += 1
        named: Sequence[str] = tuple(names) or tuple(self._limited)
        for name in named:
            if name in self._limited and not (new_jobs and name in self.reached):
                self.closed.pop(name, None)
                self.reached.discard(name)
                self.reopened_at[name] = self.notices

    @property
    def any_closed(self) -> bool:
        return bool(self.closed)
