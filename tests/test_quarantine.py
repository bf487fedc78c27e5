"""The quarantine of suspects, proven on both storage backends.

A worker "dies" here as the supervisor sees it: a worker registered and claiming through the backend (a
ghost) stops, and ``rescue_worker`` is called with what killed it. The real daemon's deaths are in
tests/test_poison.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from pgqd import Client, Entrypoint, Job, JobSpec, Worker
from pgqd.backend.base import Backend
from pgqd.models import EntrypointLimit, Finished, Requeued, WorkerInfo
from tests.support.engine import drain, fast_settings, running_worker
from tests.support.time_passes import TimePasses
from tests.support.waiting import wait_until

KILLED = "killed by signal 9"


async def ghost(backend: Backend, name: str = "ghost", entrypoints: Sequence[str] = ("work",)) -> int:
    """A worker that will die: registered like any other, driven by hand."""
    return await backend.register_worker(WorkerInfo(f"{name}-host", 4242, tuple(entrypoints)))


def limits(max_attempts: int = 1, hold: bool = False, name: str = "work") -> list[EntrypointLimit]:
    return [EntrypointLimit(name, max_attempts=max_attempts, hold_failures=hold)]


async def suspects_from_a_crash(backend: Backend, client: Client, count: int) -> list[int]:
    """Jobs that a worker held when it died, each now a suspect."""
    ids = [i for i in await client.enqueue_many([JobSpec("work", n) for n in range(count)]) if i is not None]
    dead = await ghost(backend)
    assert len((await backend.claim(dead, count, limits())).jobs) == count
    assert sorted(await backend.rescue_worker(dead, KILLED)) == sorted(ids)
    return ids


class Intervals:
    """A handler recording when each job ran, to check that a suspect ran alone."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.runs: dict[int, tuple[float, float]] = {}

    async def __call__(self, job: Job) -> None:
        began = time.monotonic()
        await asyncio.sleep(self.seconds)
        self.runs[job.id] = (began, time.monotonic())

    def overlapping(self, job_id: int) -> list[int]:
        start, end = self.runs[job_id]
        return [other for other, (s, e) in self.runs.items() if other != job_id and s < end and start < e]


# --- rescue ---------------------------------------------------------------------------------------------------


async def test_the_jobs_of_a_dead_worker_become_suspects_with_their_lost_run_not_counted(
    backend: Backend, client: Client
) -> None:
    ids = await suspects_from_a_crash(backend, client, 3)

    states = await client.status(ids)
    assert {state.status for state in states.values()} == {"suspect"}
    assert {state.attempts for state in states.values()} == {0}  # a bystander is not charged
    assert {state.error for state in states.values()} == {None}
    # The regular claim never takes a suspect; a claim that comes back short says they wait.
    other = await ghost(backend, "other")
    result = await backend.claim(other, 10, limits())
    assert result.jobs == []
    assert result.suspects


async def test_a_suspect_is_claimed_only_alone_one_at_a_time_across_the_fleet(backend: Backend, client: Client) -> None:
    ids = await suspects_from_a_crash(backend, client, 3)
    first, second = await ghost(backend, "first"), await ghost(backend, "second")

    alone = await backend.claim(first, 10, limits(), isolated=True)
    assert [job.id for job in alone.jobs] == [ids[0]]  # exactly one, oldest first
    assert alone.suspects  # more wait
    # While it runs alone, nobody else takes a suspect, and nobody is told to try.
    assert (await backend.claim(second, 10, limits(), isolated=True)).jobs == []
    assert not (await backend.claim(second, 10, limits())).suspects
    assert not (await backend.heartbeat(second, WorkerInfo("second-host", 4242, ("work",)))).suspects

    # It ran fine: the next suspect may go.
    await backend.record(first, [Finished(ids[0], "successful")], [])
    assert (await client.status([ids[0]]))[ids[0]].status == "successful"
    assert (await backend.heartbeat(second, WorkerInfo("second-host", 4242, ("work",)))).suspects
    assert [job.id for job in (await backend.claim(second, 10, limits(), isolated=True)).jobs] == [ids[1]]


async def test_a_suspect_that_kills_its_worker_alone_is_charged_and_given_up_after_its_budget(
    backend: Backend, client: Client
) -> None:
    [poison] = await suspects_from_a_crash(backend, client, 1)

    for run in (1, 2, 3):
        dead = await ghost(backend, f"victim{run}")
        assert [job.id for job in (await backend.claim(dead, 1, limits(3), isolated=True)).jobs] == [poison]
        await backend.rescue_worker(dead, KILLED)
        state = (await client.status([poison]))[poison]
        assert state.attempts == run
        assert state.error is not None
        assert state.error.type == "pgqd.WorkerLost"
        assert KILLED in state.error.message
        if run < 3:
            assert state.status == "suspect"
            assert f"run {run} of 3" in state.error.message

    assert state.status == "exception"
    assert state.finished
    assert state.error.message == f"killed its worker process ({KILLED}) while running alone, in run 3 of 3: given up"


async def test_a_culprit_of_an_entrypoint_that_holds_failures_is_held(backend: Backend, client: Client) -> None:
    [poison] = await suspects_from_a_crash(backend, client, 1)
    dead = await ghost(backend, "victim")
    await backend.claim(dead, 1, limits(1, hold=True), isolated=True)
    await backend.rescue_worker(dead, "killed by the watchdog: event loop blocked")

    state = (await client.status([poison]))[poison]
    assert state.status == "failed"
    assert state.error is not None
    assert state.error.type == "pgqd.WorkerLost"
    assert "killed by the watchdog: event loop blocked" in state.error.message
    # An operator may try again once the cause is fixed.
    assert await client.requeue([poison]) == [poison]
    assert (await client.status([poison]))[poison].status == "queued"


async def test_a_suspect_whose_worker_held_other_jobs_too_is_not_charged(backend: Backend, client: Client) -> None:
    [suspect] = await suspects_from_a_crash(backend, client, 1)
    regular = await client.enqueue("work", "regular")
    dead = await ghost(backend, "busy")
    await backend.claim(dead, 1, limits(1), isolated=True)
    await backend.claim(dead, 5, limits(1))  # not alone: the death points at nobody

    await backend.rescue_worker(dead, KILLED)

    states = await client.status([suspect, regular])
    assert {state.status for state in states.values()} == {"suspect"}
    assert {state.attempts for state in states.values()} == {0}
    assert {state.error for state in states.values()} == {None}


async def test_the_stale_heartbeat_rescue_charges_a_culprit_and_names_its_silent_worker(
    backend: Backend, client: Client, time_passes: TimePasses
) -> None:
    [poison] = await suspects_from_a_crash(backend, client, 1)
    silent = await ghost(backend, "silent")
    await backend.claim(silent, 1, limits(1), isolated=True)
    await time_passes(0.3)

    assert await backend.rescue_stale(worker_timeout=0.2) == [poison]

    state = (await client.status([poison]))[poison]
    assert state.status == "exception"
    assert state.error is not None
    assert state.error.type == "pgqd.WorkerLost"
    assert "(no heartbeat for 0.2s from pid 4242 on silent-host)" in state.error.message


async def test_a_suspect_released_unfinished_or_stray_stays_a_suspect(backend: Backend, client: Client) -> None:
    first, second = await suspects_from_a_crash(backend, client, 2)
    worker = await ghost(backend, "alive")
    await backend.claim(worker, 1, limits(), isolated=True)
    assert await backend.release_stray(worker, []) == [first]  # a claim whose reply was lost
    await backend.claim(worker, 1, limits(), isolated=True)
    await backend.record(worker, [Requeued(first, "release")], [])  # a shutdown

    states = await client.status([first, second])
    assert {state.status for state in states.values()} == {"suspect"}
    assert states[first].attempts == 0


async def test_a_suspect_can_be_cancelled(backend: Backend, client: Client) -> None:
    [suspect] = await suspects_from_a_crash(backend, client, 1)
    assert (await client.cancel(suspect)).canceled == [suspect]
    assert (await client.status([suspect]))[suspect].status == "canceled"


# --- the engine -----------------------------------------------------------------------------------------------


async def test_an_idle_worker_runs_suspects_one_at_a_time_alone_and_clears_them(
    backend: Backend, client: Client
) -> None:
    ids = await suspects_from_a_crash(backend, client, 4)
    ran = Intervals(0.02)

    await drain(Worker(backend, [Entrypoint("work", ran)], fast_settings(concurrency=8)))

    states = await client.status(ids)
    assert {state.status for state in states.values()} == {"successful"}
    assert {state.attempts for state in states.values()} == {1}
    assert all(ran.overlapping(job_id) == [] for job_id in ids)


async def test_a_busy_worker_finishes_its_jobs_then_runs_a_suspect_alone_then_goes_on(
    backend: Backend, client: Client
) -> None:
    [suspect] = await suspects_from_a_crash(backend, client, 1)
    ran = Intervals(0.05)
    regular = [i for i in await client.enqueue_many([JobSpec("work") for _ in range(60)]) if i is not None]
    settings = fast_settings(concurrency=4, batch_size=4, heartbeat_interval=0.05)

    async with running_worker(Worker(backend, [Entrypoint("work", ran)], settings)):

        async def all_ran() -> bool:
            return len(ran.runs) == 61

        await wait_until(all_ran, timeout=20, what="every job to run")

    assert ran.overlapping(suspect) == []
    states = await client.status([suspect, *regular])
    assert {state.status for state in states.values()} == {"successful"}


async def test_two_workers_never_run_suspects_alone_at_the_same_time(backend: Backend, client: Client) -> None:
    ids = await suspects_from_a_crash(backend, client, 6)
    ran = Intervals(0.03)

    def worker() -> Worker:
        return Worker(backend, [Entrypoint("work", ran)], fast_settings(concurrency=4, heartbeat_interval=0.05))

    async with running_worker(worker()), running_worker(worker()):

        async def all_ran() -> bool:
            return len(ran.runs) == 6

        await wait_until(all_ran, timeout=20, what="every suspect to run")

    assert all(ran.overlapping(job_id) == [] for job_id in ids)


async def test_a_worker_told_of_suspects_it_cannot_take_goes_on_with_regular_work(
    backend: Backend, client: Client
) -> None:
    await suspects_from_a_crash(backend, client, 2)
    busy = await ghost(backend, "elsewhere")
    await backend.claim(busy, 1, limits(), isolated=True)  # another worker runs one alone, for long
    ran = Intervals()
    regular = [i for i in await client.enqueue_many([JobSpec("work") for _ in range(5)]) if i is not None]

    await drain(Worker(backend, [Entrypoint("work", ran)], fast_settings()))

    assert sorted(ran.runs) == sorted(regular)


async def test_a_suspect_cancelled_while_its_worker_waits_to_run_it_alone_never_runs(
    backend: Backend, client: Client
) -> None:
    [suspect] = await suspects_from_a_crash(backend, client, 1)
    gate = asyncio.Event()
    ran: list[int] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)
        await asyncio.wait_for(gate.wait(), 10)

    regular = await client.enqueue("work", "regular")
    async with running_worker(Worker(backend, [Entrypoint("work", handler)], fast_settings(concurrency=2))):

        async def held() -> bool:  # claimed to run alone, waiting for the regular job to end
            return (await client.status([suspect]))[suspect].status == "picked"

        await wait_until(held, timeout=10, what="the suspect to be claimed")
        assert (await client.cancel(suspect)).signalled == [suspect]
        assert (await client.wait(suspect, timeout=10)).status == "canceled"
        gate.set()
        assert (await client.wait(regular, timeout=10)).status == "successful"

    assert ran == [regular]
