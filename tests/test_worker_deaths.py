"""What becomes of a dead worker's jobs, proven on both storage backends.

A worker "dies" here as the supervisor sees it: a worker registered and claiming through the backend (a
ghost) stops, and ``rescue_worker`` is called with what killed it. The real daemon's deaths are in
tests/test_poison.py and tests/test_recovery.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from pgqd import Client, Entrypoint, Job, JobSpec, Worker
from pgqd.backend.base import Backend
from pgqd.models import EntrypointLimit, Finished, Recorded, Unfinished, WorkerInfo
from tests.support.engine import drain, fast_settings, running_worker
from tests.support.lossy_backend import LosesAClaimReply
from tests.support.time_passes import TimePasses
from tests.support.waiting import wait_until

KILLED = "killed by signal 9"


async def ghost(backend: Backend, name: str = "ghost", entrypoints: Sequence[str] = ("work",)) -> int:
    """A worker that will die: registered like any other, driven by hand."""
    return await backend.register_worker(WorkerInfo(f"{name}-host", 4242, tuple(entrypoints)))


def limits(max_worker_deaths: int = 3, hold: bool = False, name: str = "work") -> list[EntrypointLimit]:
    return [EntrypointLimit(name, max_worker_deaths=max_worker_deaths, hold_failures=hold)]


async def crash(backend: Backend, ids: Sequence[int], name: str = "ghost") -> None:
    """A worker claims exactly these jobs (all that is claimable), and dies holding them."""
    dead = await ghost(backend, name)
    assert sorted(job.id for job in (await backend.claim(dead, len(ids), limits())).jobs) == sorted(ids)
    assert sorted(await backend.rescue_worker(dead, KILLED)) == sorted(ids)


async def suspects_from_two_crashes(backend: Backend, client: Client, count: int) -> list[int]:
    """Jobs present in two deaths, each now a suspect."""
    ids = [i for i in await client.enqueue_many([JobSpec("work", n) for n in range(count)]) if i is not None]
    await crash(backend, ids, "first")
    await crash(backend, ids, "second")
    return ids


async def status_of(client: Client, ids: Sequence[int]) -> set[str]:
    return {state.status for state in (await client.status(list(ids))).values()}


class Intervals:
    """A handler recording when each job ran, to check that a suspect ran alone in its worker."""

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


async def test_the_jobs_of_a_dead_worker_are_claimable_at_once_with_their_lost_run_not_counted(
    backend: Backend, client: Client
) -> None:
    ids = [i for i in await client.enqueue_many([JobSpec("work", n) for n in range(3)]) if i is not None]
    await crash(backend, ids)

    states = await client.status(ids)
    assert {state.status for state in states.values()} == {"queued"}
    assert {state.attempts for state in states.values()} == {0}
    assert {state.error for state in states.values()} == {None}
    # Any worker takes them all back in one ordinary claim, alongside other work.
    other = await ghost(backend, "other")
    result = await backend.claim(other, 10, limits())
    assert sorted(job.id for job in result.jobs) == sorted(ids)
    assert not result.suspects


async def test_a_job_present_in_a_second_death_is_a_suspect_that_the_regular_claim_leaves(
    backend: Backend, client: Client
) -> None:
    ids = await suspects_from_two_crashes(backend, client, 3)

    states = await client.status(ids)
    assert {state.status for state in states.values()} == {"suspect"}
    assert {state.attempts for state in states.values()} == {0}  # bystanders are not charged
    other = await ghost(backend, "other")
    result = await backend.claim(other, 10, limits())
    assert result.jobs == []
    assert result.suspects  # a claim that comes back short says they wait
    assert (await backend.heartbeat(other, WorkerInfo("other-host", 4242, ("work",)))).suspects


async def test_suspects_run_alone_in_parallel_one_per_worker(backend: Backend, client: Client) -> None:
    ids = await suspects_from_two_crashes(backend, client, 3)
    first, second = await ghost(backend, "first-alone"), await ghost(backend, "second-alone")

    one = await backend.claim(first, 10, limits(), isolated=True)
    two = await backend.claim(second, 10, limits(), isolated=True)

    assert [job.id for job in one.jobs] == [ids[0]]  # exactly one each, oldest first
    assert [job.id for job in two.jobs] == [ids[1]]
    assert one.suspects  # more wait
    await backend.record(first, [Finished(ids[0], "successful")], [])
    assert (await client.status([ids[0]]))[ids[0]].status == "successful"


async def test_a_suspect_that_kills_its_worker_alone_is_given_up_after_its_death_budget_not_its_retries(
    backend: Backend, client: Client
) -> None:
    [poison] = await suspects_from_two_crashes(backend, client, 1)

    for death in (1, 2, 3):
        dead = await ghost(backend, f"victim{death}")
        assert [job.id for job in (await backend.claim(dead, 1, limits(3), isolated=True)).jobs] == [poison]
        await backend.rescue_worker(dead, KILLED)
        state = (await client.status([poison]))[poison]
        assert state.error is not None
        assert state.error.type == "pgqd.WorkerLost"
        assert KILLED in state.error.message
        if death < 3:
            assert state.status == "suspect"
            assert state.attempts == 0  # deaths never spend retry attempts
            assert f"in death {death} of 3 allowed" in state.error.message

    assert state.status == "exception"
    assert state.finished
    assert state.error.message == (
        f"killed its worker process ({KILLED}) while running alone, in death 3 of 3 allowed: given up"
    )


async def test_a_culprit_of_an_entrypoint_that_holds_failures_is_held_and_a_requeue_forgets_its_deaths(
    backend: Backend, client: Client
) -> None:
    [poison] = await suspects_from_two_crashes(backend, client, 1)
    dead = await ghost(backend, "victim")
    await backend.claim(dead, 1, limits(1, hold=True), isolated=True)
    await backend.rescue_worker(dead, "killed for not checking in: event loop blocked")

    state = (await client.status([poison]))[poison]
    assert state.status == "failed"
    assert state.error is not None
    assert state.error.type == "pgqd.WorkerLost"
    assert "killed for not checking in: event loop blocked" in state.error.message
    # An operator may try again once the cause is fixed: it starts with a clean record.
    assert await client.requeue([poison]) == [poison]
    assert (await client.status([poison]))[poison].status == "queued"
    await crash(backend, [poison], "after-requeue")
    assert (await client.status([poison]))[poison].status == "queued"


async def test_a_suspect_whose_worker_ran_other_jobs_too_is_not_charged(backend: Backend, client: Client) -> None:
    [suspect] = await suspects_from_two_crashes(backend, client, 1)
    regular = await client.enqueue("work", "regular")
    dead = await ghost(backend, "busy")
    await backend.claim(dead, 1, limits(1), isolated=True)
    await backend.claim(dead, 5, limits(1))  # not alone: the death points at nobody

    await backend.rescue_worker(dead, KILLED)

    states = await client.status([suspect, regular])
    assert states[suspect].status == "suspect"
    assert states[suspect].error is None
    assert states[regular].status == "queued"  # its first death
    assert {state.attempts for state in states.values()} == {0}


async def test_the_stale_heartbeat_rescue_charges_a_culprit_and_names_its_silent_worker(
    backend: Backend, client: Client, time_passes: TimePasses
) -> None:
    [poison] = await suspects_from_two_crashes(backend, client, 1)
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
    first, second = await suspects_from_two_crashes(backend, client, 2)
    worker = await ghost(backend, "alive")
    await backend.claim(worker, 1, limits(), isolated=True)
    assert await backend.release_stray(worker, []) == [first]  # a claim whose reply was lost
    await backend.claim(worker, 1, limits(), isolated=True)
    await backend.record(worker, [Unfinished(first, "release")], [])  # a shutdown

    states = await client.status([first, second])
    assert {state.status for state in states.values()} == {"suspect"}
    assert states[first].attempts == 0


async def test_a_suspect_can_be_cancelled(backend: Backend, client: Client) -> None:
    [suspect] = await suspects_from_two_crashes(backend, client, 1)
    assert (await client.cancel(suspect)).canceled == [suspect]
    assert (await client.status([suspect]))[suspect].status == "canceled"


# --- the engine -----------------------------------------------------------------------------------------------


async def test_an_idle_worker_runs_suspects_one_at_a_time_alone_and_clears_them(
    backend: Backend, client: Client
) -> None:
    ids = await suspects_from_two_crashes(backend, client, 4)
    ran = Intervals(0.02)

    await drain(Worker(backend, [Entrypoint("work", ran)], fast_settings(concurrency=8)))

    states = await client.status(ids)
    assert {state.status for state in states.values()} == {"successful"}
    assert {state.attempts for state in states.values()} == {1}
    assert all(ran.overlapping(job_id) == [] for job_id in ids)


async def test_a_busy_worker_finishes_its_jobs_then_runs_a_suspect_alone_then_goes_on(
    backend: Backend, client: Client
) -> None:
    [suspect] = await suspects_from_two_crashes(backend, client, 1)
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


async def test_two_workers_run_suspects_each_alone_in_its_own_worker(backend: Backend, client: Client) -> None:
    ids = await suspects_from_two_crashes(backend, client, 6)
    regular = [i for i in await client.enqueue_many([JobSpec("work") for _ in range(20)]) if i is not None]
    runs = [Intervals(0.03), Intervals(0.03)]

    def worker(ran: Intervals) -> Worker:
        return Worker(backend, [Entrypoint("work", ran)], fast_settings(concurrency=4, heartbeat_interval=0.05))

    async with running_worker(worker(runs[0])), running_worker(worker(runs[1])):

        async def all_ran() -> bool:
            return sum(len(ran.runs) for ran in runs) == 26

        await wait_until(all_ran, timeout=20, what="every job to run")

    for ran in runs:
        assert all(ran.overlapping(job_id) == [] for job_id in ids if job_id in ran.runs)
    assert await status_of(client, [*ids, *regular]) == {"successful"}


async def test_a_suspect_cancelled_while_its_worker_waits_to_run_it_alone_never_runs(
    backend: Backend, client: Client
) -> None:
    [suspect] = await suspects_from_two_crashes(backend, client, 1)
    gate = asyncio.Event()
    ran: list[int] = []

    async def handler(job: Job) -> None:
        ran.append(job.id)
        await asyncio.wait_for(gate.wait(), 10)

    regular = await client.enqueue("work", "regular")
    async with running_worker(Worker(backend, [Entrypoint("work", handler)], fast_settings(concurrency=2))):

        async def claimed_to_run_alone() -> bool:  # waiting for the regular job to end
            return (await client.status([suspect]))[suspect].status == "picked"

        await wait_until(claimed_to_run_alone, timeout=10, what="the suspect to be claimed")
        assert (await client.cancel(suspect)).signalled == [suspect]
        assert (await client.wait(suspect, timeout=10)).status == "canceled"
        gate.set()
        assert (await client.wait(regular, timeout=10)).status == "successful"

    assert ran == [regular]


async def test_a_suspect_runs_alone_only_after_the_jobs_of_a_lost_claim_reply_are_released(
    backend: Backend, client: Client
) -> None:
    [suspect] = await suspects_from_two_crashes(backend, client, 1)
    regular = [i for i in await client.enqueue_many([JobSpec("work", n) for n in range(3)]) if i is not None]

    async def once_suspects_are_heard(worker: Worker) -> None:
        async def heard() -> bool:
            return worker.state.suspects

        await wait_until(heard, timeout=10, what="the heartbeat to say suspects wait")

    lossy = LosesAClaimReply(backend, before_failing=once_suspects_are_heard)
    beside_the_suspect: dict[int, str] = {}

    async def handler(job: Job) -> None:
        if job.id == suspect:
            states = await client.status(lossy.lost)
            beside_the_suspect.update({job_id: state.status for job_id, state in states.items()})

    worker = Worker(lossy, [Entrypoint("work", handler)], fast_settings(concurrency=4, heartbeat_interval=0.05))  # type: ignore[arg-type]
    lossy.worker = worker
    async with running_worker(worker):

        async def all_done() -> bool:
            return await status_of(client, [suspect, *regular]) == {"successful"}

        await wait_until(all_done, timeout=20, what="every job to end")

    assert sorted(lossy.lost) == sorted(regular)
    # Had they still been picked by this worker, the suspect would not have been alone: a death it caused would
    # have been charged to none of them.
    assert set(beside_the_suspect.values()) == {"queued"}


async def test_a_worker_stopping_before_it_reconciled_releases_the_jobs_of_a_lost_claim_reply(
    backend: Backend, client: Client
) -> None:
    """Left picked in the name of a worker that is gone, they would wait for the stale-heartbeat rescue and each
    count a death they had nothing to do with."""
    ids = [i for i in await client.enqueue_many([JobSpec("work", n) for n in range(3)]) if i is not None]

    async def stop_now(worker: Worker) -> None:
        worker.stop(0)

    lossy = LosesAClaimReply(backend, before_failing=stop_now)
    worker = Worker(lossy, [Entrypoint("work", lambda job: None)], fast_settings())  # type: ignore[arg-type]
    lossy.worker = worker
    await asyncio.wait_for(worker.run(), 10)

    assert sorted(lossy.lost) == sorted(ids)
    states = await client.status(ids)
    assert {state.status for state in states.values()} == {"queued"}
    assert {state.attempts for state in states.values()} == {0}
    await drain(Worker(backend, [Entrypoint("work", lambda job: None)], fast_settings()))
    assert await status_of(client, ids) == {"successful"}


class UndoesAWriteBeforeASuspect:
    """A backend on which the write of outcomes that goes out while a suspect waits to run alone is followed by a
    failover that undid an earlier write: a job is picked in the worker's name again, and the worker hears that
    its connection came back."""

    def __init__(self, backend: Backend, stray: int) -> None:
        self.backend = backend
        self.stray = stray
        self.worker: Worker | None = None
        self.undone = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.backend, name)

    async def record(self, worker_id: int, *args: Any, **kwargs: Any) -> Recorded:
        written = await self.backend.record(worker_id, *args, **kwargs)
        worker = self.worker
        if worker is not None and worker.state.suspect_claimed is not None and not self.undone:
            self.undone = True
            taken = await self.backend.claim(worker_id, 1, [EntrypointLimit("other")])
            assert [job.id for job in taken.jobs] == [self.stray]
            worker.state.reconnected()
        return written


async def test_a_suspect_waits_for_the_jobs_a_failover_put_back_in_its_workers_name_during_the_last_write(
    backend: Backend, client: Client
) -> None:
    [suspect] = await suspects_from_two_crashes(backend, client, 1)
    stray = await client.enqueue("other", "not served here")
    regular = await client.enqueue("work", "regular")
    undoing = UndoesAWriteBeforeASuspect(backend, stray)
    beside_the_suspect: list[str] = []

    async def handler(job: Job) -> None:
        if job.id == regular:
            # Runs until the worker has claimed the suspect, so that its outcome is the write before the suspect.
            async def suspect_claimed() -> bool:
                return worker.state.suspect_claimed is not None

            await wait_until(suspect_claimed, timeout=10, what="the suspect to be claimed")
        elif job.id == suspect:
            beside_the_suspect.append((await client.status([stray]))[stray].status)

    # Outcomes linger, so the regular job's outcome goes out in the write made just before the suspect starts (on
    # PostgreSQL; the in-memory backend's worker writes it once it is idle, while the suspect waits): either way
    # the job put back in the worker's name must be released before the suspect runs.
    settings = fast_settings(concurrency=4, flush_linger=5.0)
    worker = Worker(undoing, [Entrypoint("work", handler)], settings)  # type: ignore[arg-type]
    undoing.worker = worker
    async with running_worker(worker):

        async def both_done() -> bool:
            return await status_of(client, [suspect, regular]) == {"successful"}

        await wait_until(both_done, timeout=20, what="the regular job and the suspect to end")

    assert undoing.undone
    assert beside_the_suspect == ["queued"]
