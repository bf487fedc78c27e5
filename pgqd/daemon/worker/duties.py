"""The lead worker's periodic duties, all of one shape: an object whose ``turn`` does one round and says when the
next is due, run by ``keep_doing`` until the worker stops. ``lead_duties`` is the one list of them, so a new duty
is one more entry there and no change to the worker's main function.

Each duty is isolated from the others: it has its own connection (``SideConnection``) or the worker's backend,
handles its own failures inside ``turn`` (a database that fails or hangs costs it that round, never its task), and
can be tested on its own by calling ``turn``.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from pgqd.backend.base import Backend
from pgqd.daemon.metrics import QueueGaugeSamples, WorkerMetrics
from pgqd.daemon.worker.log_partitions import LogPartitionUpkeep
from pgqd.daemon.worker.log_rollup import LogRollup
from pgqd.daemon.worker.plan import WorkerPlan
from pgqd.daemon.worker.queue_gauges import COUNT_LIMIT, QueueGaugeCollector
from pgqd.daemon.worker.scheduler import Scheduler
from pgqd.daemon.worker.vacuum import JobsTableUpkeep


class Duty(Protocol):
    async def turn(self) -> float | None:
        """One round; returns the seconds until the next one (None: this duty has nothing more to do)."""
        ...

    def close(self) -> None:
        """Lets go of what the duty holds (its connection); called once, when it stops."""
        ...


# The upkeep duties take their first turn this long after the worker starts. Each opens a connection of its own,
# and their first rounds (the queue gauges' counts, the vacuum check, the partitions' bounds, the rollup's first
# pass) took 19-29 ms each, on the same cores as a new daemon's first claims. None of them is due at start:
# schedules are, and the scheduler starts at once.
UPKEEP_AFTER = 1.0


async def keep_doing(duty: Duty, first_after: float = 0.0) -> None:
    """Turns ``duty`` until it is done or cancelled, the first turn ``first_after`` seconds from now."""
    try:
        if first_after > 0:
            await asyncio.sleep(first_after)
        while True:
            pause = await duty.turn()
            if pause is None:
                return
            await asyncio.sleep(pause)
    finally:
        duty.close()


def first_turn_after(duty: Duty) -> float:
    """Seconds from the worker's start to ``duty``'s first turn."""
    return 0.0 if isinstance(duty, Scheduler) else UPKEEP_AFTER


def lead_duties(plan: WorkerPlan, backend: Backend, metrics: WorkerMetrics | None) -> list[Duty]:
    """The duties this worker process runs: schedules in every worker, the rest in one worker per daemon."""
    duties: list[Duty] = [Scheduler(backend, plan.schedules, metrics)]
    if plan.queue_gauges and metrics is not None:
        samples = QueueGaugeSamples(COUNT_LIMIT, (e.name for e in plan.entrypoints))
        duties.append(QueueGaugeCollector(plan.dsn, plan.names, samples))
    if plan.upkeep:
        duties.append(JobsTableUpkeep(plan.dsn, plan.names))
    if plan.log_rollup:
        duties.append(LogRollup(plan.dsn, plan.names))
    if plan.log_partitions:
        duties.append(LogPartitionUpkeep(plan.dsn, plan.names, plan.settings.retention))
    return duties
