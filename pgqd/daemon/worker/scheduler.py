"""Cron schedules: each tick enqueues one job, exactly once across every daemon running the same config.

Exactly once comes from the database: firing a tick moves the schedule's ``next_run`` forward with a
compare-and-set on its old value, in the same statement that enqueues the job. Any number of schedulers may see
a tick due; one statement wins, the others change nothing. One worker process per daemon runs the scheduler; it
sleeps until the next due tick and makes no queries at all when the config has no schedules.

Ticks are due by the database's clock, read each time the scheduler wakes, never by the host's: a daemon on a
host whose clock is off by seconds or minutes would otherwise fire ticks that early (or late) and, being the first
to see them due, move ``next_run`` past the ticks in between, which then never fire.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from pgqd.backend.base import Backend
from pgqd.backoff import Backoff
from pgqd.cron import next_tick, ticks_between
from pgqd.daemon.metrics import WorkerMetrics
from pgqd.errors import BackendUnavailable
from pgqd.models import NewJob, ScheduleDefinition, ScheduleSpec, ScheduleState

log = structlog.get_logger("pgqd.daemon.worker.scheduler")

# A tick fired up to this late is on time (the scheduler was busy or just started); older ones are misfires.
ON_TIME = timedelta(seconds=60)
# misfire = "all" catches up at most this many ticks, and none older than this.
CATCH_UP_TICKS = 1000
CATCH_UP_WINDOW = timedelta(days=1)
# Even with nothing due, look again now and then: another daemon may have changed the table.
MAX_SLEEP = 60.0


@dataclass(frozen=True)
class Firing:
    """What to do about one due schedule: enqueue jobs for ``ticks`` (maybe none) and move on to ``next_run``."""

    ticks: list[datetime]
    next_run: datetime


def plan_firing(state: ScheduleState, now: datetime) -> Firing:
    due = state.next_run
    following = next_tick(state.cron, state.timezone, now)
    late = now - due
    if late <= ON_TIME:
        return Firing([due], next_tick(state.cron, state.timezone, max(due, now)))
    if state.misfire == "skip":
        return Firing([], following)
    if state.misfire == "all":
        start = max(due, now - CATCH_UP_WINDOW)
        if start != due:
            start = next_tick(state.cron, state.timezone, start - timedelta(microseconds=1))
        return Firing(ticks_between(state.cron, state.timezone, start, now, CATCH_UP_TICKS), following)
    # coalesce: one run stands for every missed tick; it carries the latest of them.
    missed = ticks_between(state.cron, state.timezone, due, now, CATCH_UP_TICKS)
    return Firing([missed[-1]], following)


def tick_job(state: ScheduleState, tick: datetime) -> NewJob:
    headers = json.dumps({"pgqd-schedule": state.name, "pgqd-schedule-tick": tick.isoformat()})
    return NewJob(entrypoint=state.entrypoint, payload=state.payload, priority=state.priority, headers=headers)


def definitions(specs: Sequence[ScheduleSpec], now: datetime) -> list[ScheduleDefinition]:
    return [ScheduleDefinition(s, next_tick(s.cron, s.timezone, now)) for s in specs]


class Scheduler:
    """Fires due ticks of the configured schedules until cancelled."""

    def __init__(self, backend: Backend, specs: Sequence[ScheduleSpec], metrics: WorkerMetrics | None = None) -> None:
        self.backend = backend
        self.specs = list(specs)
        self.metrics = metrics
        self.fired = 0
        # Where this scheduler moved each schedule when it fired it: the database should never go back from there.
        self._moved_to: dict[str, datetime] = {}
        self.rewinds = 0
        self._synced = False
        self._backoff = Backoff(initial=0.5, maximum=30.0)

    async def turn(self) -> float | None:
        """Syncs the schedules once, then fires what is due; returns the seconds until the next tick is due."""
        if not self.specs:
            return None
        try:
            if not self._synced:
                await self.backend.sync_schedules(definitions(self.specs, await self.backend.current_time()))
                self._synced = True
            pause = await self.fire_due(await self.backend.current_time())
            self._backoff.reset()
        except BackendUnavailable as exc:
            pause = self._backoff.next()
            log.warning("scheduler waiting for the database", error=str(exc), retry_in=round(pause, 1))
        except Exception:
            # A bad row or a bug must not silently end scheduling for this daemon.
            pause = self._backoff.next()
            log.exception("scheduler failed; retrying", retry_in=round(pause, 1))
        return pause

    def close(self) -> None:
        return None

    async def fire_due(self, now: datetime) -> float:
        """Fires every due schedule as of ``now`` (the database's time); returns the seconds until the next tick is
        due."""
        began = time.monotonic()
        names = {s.name for s in self.specs}
        states = [s for s in await self.backend.schedule_states() if s.name in names and s.enabled]
        upcoming: list[datetime] = []
        for state in states:
            self._check_not_rewound(state)
            if state.next_run <= now:
                firing = plan_firing(state, now)
                jobs = [tick_job(state, tick) for tick in firing.ticks]
                ids = await self.backend.fire_schedule(state.name, state.next_run, firing.next_run, jobs)
                if ids is not None:
                    self._moved_to[state.name] = firing.next_run
                    self.fired += len(ids)
                    if self.metrics is not None:
                        self.metrics.schedule_fired(state.name, len(ids))
                    log.info("schedule fired", schedule=state.name, ticks=len(ids), job_ids=ids[:10])
                upcoming.append(firing.next_run)
            else:
                upcoming.append(state.next_run)
        if not upcoming:
            return MAX_SLEEP
        current = now + timedelta(seconds=time.monotonic() - began)
        return min(max((min(upcoming) - current).total_seconds(), 0.0), MAX_SLEEP)

    def _check_not_rewound(self, state: ScheduleState) -> None:
        """A schedule whose next run is back before where this scheduler moved it: the database lost the firing
        (a failover to a standby that had not received it), unless another daemon changed the cron. The ticks
        in between fire again; this says so once, for the operator to look at the failover."""
        moved_to = self._moved_to.get(state.name)
        if moved_to is None or state.next_run >= moved_to:
            return
        self.rewinds += 1
        del self._moved_to[state.name]
        log.warning(
            "schedule moved back to a tick already fired: the database lost committed transactions "
            "(a failover to a standby that lacked them?) or another daemon changed it; the tick fires again",
            schedule=state.name,
            next_run=state.next_run.isoformat(),
            fired_through=moved_to.isoformat(),
        )


def describe(states: Sequence[ScheduleState]) -> list[dict[str, str]]:
    """Rows for ``pgqd schedules``."""
    rows = []
    for s in states:
        rows.append(
            {
                "name": s.name,
                "cron": s.cron,
                "timezone": s.timezone,
                "entrypoint": s.entrypoint,
                "enabled": "yes" if s.enabled else "no",
                "next run": s.next_run.isoformat(timespec="seconds"),
                "last run": s.last_run.isoformat(timespec="seconds") if s.last_run else "-",
                "last outcome": s.last_status or "-",
            }
        )
    return rows
