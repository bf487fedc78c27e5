"""The lead worker's duties share one shape: each turn says when the next is due, ``keep_doing`` runs them until
cancelled or done and always lets go of what they hold, and ``lead_duties`` is the one list of them."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from pgqd import Entrypoint, MemoryBackend, WorkerSettings
from pgqd.daemon.worker.duties import keep_doing, lead_duties
from pgqd.daemon.worker.log_partitions import LogPartitionUpkeep
from pgqd.daemon.worker.log_rollup import LogRollup
from pgqd.daemon.worker.main import WorkerPlan
from pgqd.daemon.worker.scheduler import Scheduler
from pgqd.daemon.worker.vacuum import JobsTableUpkeep
from pgqd.identifiers import Names


async def nothing(_job: object) -> None:
    return None


@pytest.fixture
def plan() -> WorkerPlan:
    """A plan for a worker that is not the daemon's lead worker."""
    return WorkerPlan(None, Names(), 2, [Entrypoint("work", nothing)], WorkerSettings(), None, -1, 1.0)


class Counting:
    def __init__(self, turns: int) -> None:
        self.left = turns
        self.turns = 0
        self.closed = 0
        self.turned_thrice = asyncio.Event()

    async def turn(self) -> float | None:
        self.turns += 1
        self.left -= 1
        if self.turns == 3:
            self.turned_thrice.set()
        return 0.0 if self.left > 0 else None

    def close(self) -> None:
        self.closed += 1


async def test_a_duty_turns_until_it_says_it_is_done_and_is_closed_once() -> None:
    duty = Counting(3)
    await asyncio.wait_for(keep_doing(duty), 5)
    assert (duty.turns, duty.closed) == (3, 1)


async def test_a_cancelled_duty_is_closed_too() -> None:
    duty = Counting(10**9)
    task = asyncio.create_task(keep_doing(duty))
    await asyncio.wait_for(duty.turned_thrice.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert duty.closed == 1


def test_the_lead_worker_runs_every_duty_and_the_others_only_their_scheduler(plan: WorkerPlan) -> None:
    backend = MemoryBackend()
    lead = replace(plan, upkeep=True, log_rollup=True, log_partitions=True)
    assert [type(d) for d in lead_duties(lead, backend, None)] == [
        Scheduler,
        JobsTableUpkeep,
        LogRollup,
        LogPartitionUpkeep,
    ]
    assert [type(d) for d in lead_duties(plan, backend, None)] == [Scheduler]
