"""The lead worker's duties share one shape: each turn says when the next is due, ``keep_doing`` runs them until
cancelled or done and always lets go of what they hold, and ``lead_duties`` is the one list of them."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from pgqd import Entrypoint, MemoryBackend, WorkerSettings
from pgqd.daemon.worker.duties import UPKEEP_AFTER, first_turn_after, keep_doing, lead_duties
from pgqd.daemon.worker.log_partitions import LogPartitionUpkeep
from pgqd.daemon.worker.log_rollup import LogRollup
from pgqd.daemon.worker.plan import WorkerPlan
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
        self.first_turn_at: float | None = None

    async def turn(self) -> float | None:
        if self.first_turn_at is None:
            self.first_turn_at = asyncio.get_running_loop().time()
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


async def test_a_duty_takes_its_first_turn_when_told() -> None:
    duty = Counting(1)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(keep_doing(duty, first_after=0.2), 5)
    assert duty.first_turn_at is not None
    # Less a hundredth: the loop may run a timer up to its clock's resolution early.
    assert duty.first_turn_at - started > 0.19
    assert (duty.turns, duty.closed) == (1, 1)


async def test_a_duty_cancelled_before_its_first_turn_is_closed_and_never_turns() -> None:
    duty = Counting(1)
    task = asyncio.create_task(keep_doing(duty, first_after=3600))
    await asyncio.sleep(0)  # the task starts its wait
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (duty.turns, duty.closed) == (0, 1)


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
    # The schedules fire at their times from the start; the upkeep leaves a new daemon's first second to its jobs.
    assert [first_turn_after(d) for d in lead_duties(lead, backend, None)] == [0.0, *[UPKEEP_AFTER] * 3]
