"""A claim says which limited entrypoints it could take nothing of (``ClaimResult.closed``), on both backends,
and a worker that leaves them out of its claims still runs their jobs as soon as they may run."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from pgqd import Client, Entrypoint, Job, JobSpec, Worker, WorkerSettings
from pgqd.backend.base import Backend
from pgqd.models import EntrypointLimit, Event, Unfinished, WorkerInfo
from pgqd.worker import limit_gates
from pgqd.worker.telemetry import NoMetrics
from tests.support.engine import running_worker
from tests.support.waiting import wait_until

FREE = EntrypointLimit("free")
PAIRED = EntrypointLimit("paired", concurrency=2)
IDLE = EntrypointLimit("idle", concurrency=3)
METERED = EntrypointLimit("metered", rate_per_second=1.0, burst=1.0)


async def test_a_full_limit_and_an_idle_limit_are_reported_closed(backend: Backend, client: Client) -> None:
    worker = await backend.register_worker(WorkerInfo("host", os.getpid(), ("free", "paired", "idle")))
    await client.enqueue_many([JobSpec("paired")] * 3 + [JobSpec("free")] * 3)
    first = await backend.claim(worker, 10, [FREE, PAIRED, IDLE])
    assert sorted(job.entrypoint for job in first.jobs) == ["free"] * 3 + ["paired"] * 2
    # Nothing queued for "idle": closed. "paired" had room for two and took them: its limit is full now, which the
    # next claim would only find out, so it is reported closed too.
    assert first.closed == {"idle": None, "paired": None}
    # Of those, "paired" because its limit is reached (more jobs would not open it), "idle" for want of work.
    assert first.reached == {"paired"}
    second = await backend.claim(worker, 10, [FREE, PAIRED, IDLE])
    assert second.jobs == []
    assert second.closed == {"paired": None, "idle": None}
    assert second.reached == {"paired"}  # its third job waits


async def test_a_limit_whose_jobs_come_after_a_full_batch_is_reported_closed(backend: Backend, client: Client) -> None:
    worker = await backend.register_worker(WorkerInfo("host", os.getpid(), ("free", "paired")))
    await client.enqueue_many([JobSpec("free")] * 4 + [JobSpec("paired")] * 2)
    full = await backend.claim(worker, 4, [FREE, PAIRED])
    assert [job.entrypoint for job in full.jobs] == ["free"] * 4
    assert full.closed == {"paired": None}
    assert full.reached == set()  # the batch was full: its limit has room
    # A claim with room to spare takes them, and with them the limit's last places.
    rest = await backend.claim(worker, 4, [FREE, PAIRED])
    assert [job.entrypoint for job in rest.jobs] == ["paired"] * 2
    assert rest.closed == {"paired": None}
    assert rest.reached == {"paired"}


async def test_a_limit_with_places_left_after_a_claim_is_not_reported_closed(backend: Backend, client: Client) -> None:
    worker = await backend.register_worker(WorkerInfo("host", os.getpid(), ("paired",)))
    await client.enqueue_many([JobSpec("paired")] * 3)
    # A batch of one: the batch, not the limit, set how many were taken; a place is left.
    one = await backend.claim(worker, 1, [PAIRED])
    assert [job.entrypoint for job in one.jobs] == ["paired"]
    assert one.closed == {}
    # The last place: taken, and the limit reported closed.
    last = await backend.claim(worker, 10, [PAIRED])
    assert [job.entrypoint for job in last.jobs] == ["paired"]
    assert last.closed == {"paired": None}


async def test_a_limit_held_elsewhere_with_jobs_waiting_is_reported_reached(backend: Backend, client: Client) -> None:
    other = await backend.register_worker(WorkerInfo("elsewhere", os.getpid(), ("paired",)))
    worker = await backend.register_worker(WorkerInfo("host", os.getpid(), ("paired",)))
    await client.enqueue_many([JobSpec("paired")] * 2)
    assert len((await backend.claim(other, 2, [PAIRED])).jobs) == 2
    # Full, but nothing waits: closed for want of work, which an enqueue changes.
    idle = await backend.claim(worker, 10, [PAIRED])
    assert (idle.closed, idle.reached) == ({"paired": None}, set())
    await client.enqueue("paired")
    full = await backend.claim(worker, 10, [PAIRED])
    assert (full.jobs, full.closed, full.reached) == ([], {"paired": None}, {"paired"})


async def test_a_spent_rate_limit_is_reported_with_its_next_token(backend: Backend, client: Client) -> None:
    worker = await backend.register_worker(WorkerInfo("host", os.getpid(), ("metered",)))
    await client.enqueue_many([JobSpec("metered")] * 2)
    first = await backend.claim(worker, 10, [METERED])
    assert len(first.jobs) == 1
    wait = first.closed["metered"]
    assert wait is not None
    assert 0 < wait <= 1.0
    assert first.throttled_in == wait


async def test_an_isolated_claim_reports_nothing_closed(backend: Backend) -> None:
    worker = await backend.register_worker(WorkerInfo("host", os.getpid(), ("paired",)))
    result = await backend.claim(worker, 1, [PAIRED], isolated=True)
    assert result.closed == {}


async def test_a_limited_entrypoint_left_out_of_claims_runs_its_jobs_once_they_are_enqueued(
    backend: Backend, client: Client
) -> None:
    """The worker is kept busy by a deep queue of unlimited jobs, so it never sleeps; the limited entrypoint is
    idle, reported closed, and left out. Jobs enqueued for it then must run while the deep queue still drains."""
    started: list[tuple[str, float]] = []

    async def record(job: Job) -> None:
        started.append((job.entrypoint, time.monotonic()))
        await asyncio.sleep(0.001)

    await client.enqueue_many([JobSpec("free")] * 3000)
    worker = Worker(
        backend,
        [Entrypoint("free", record), Entrypoint("paired", record, concurrency_limit=2)],
        WorkerSettings(concurrency=8, batch_size=4, poll_interval=30.0),
    )

    async def draining() -> bool:
        return len(started) > 100

    async def limited_ran() -> bool:
        return sum(1 for name, _ in started if name == "paired") == 4

    async with running_worker(worker, grace=5, timeout=30):
        await wait_until(draining, timeout=30, what="the deep queue draining")
        assert worker.gates.any_closed
        enqueued_at = time.monotonic()
        await client.enqueue_many([JobSpec("paired", priority=1)] * 4)  # ahead of the deep queue
        await wait_until(limited_ran, timeout=30, what="the limited jobs")
        first_limited = min(at for name, at in started if name == "paired")
        # Notified, not found by a poll (30 s): it ran while the deep queue still drained.
        assert sum(1 for name, _ in started if name == "free") < 3000
        assert first_limited - enqueued_at < 10


class CountedClaims(NoMetrics):
    def __init__(self) -> None:
        self.claims = 0

    def claimed(self, count: int) -> None:
        self.claims += 1


async def test_a_drain_ends_when_the_only_work_left_waits_for_a_limit_another_worker_holds(
    backend: Backend, client: Client
) -> None:
    """As before limits could be closed: a drain does not wait for slots other workers hold, and it does not claim
    over and over while they hold them."""
    other = await backend.register_worker(WorkerInfo("elsewhere", os.getpid(), ("paired",)))
    await client.enqueue_many([JobSpec("paired")] * 3)
    assert len((await backend.claim(other, 2, [PAIRED])).jobs) == 2  # the limit is full, held elsewhere

    async def noop(job: Job) -> None:
        return None

    counted = CountedClaims()
    worker = Worker(
        backend,
        [Entrypoint("paired", noop, concurrency_limit=2), Entrypoint("free", noop)],
        WorkerSettings(poll_interval=30.0),
        metrics=counted,
    )
    await asyncio.wait_for(worker.run(drain=True), timeout=10)
    assert counted.claims <= 3


async def test_a_busy_worker_leaves_a_freed_slot_to_the_worker_whose_job_freed_it(
    backend: Backend, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a deep queue, a 'slot' notice does not reopen a limit (each busy worker of a fleet would run a claim with
    limits per freed slot, all but one finding the limit full again); the worker that ran the job asks for the limit
    as soon as the job's outcome is written. Nothing else reopens it here: the fallback is pushed out of reach."""
    monkeypatch.setattr(limit_gates, "REOPEN_AFTER", 60.0)
    started: list[str] = []

    async def quick(job: Job) -> None:
        started.append(job.entrypoint)
        await asyncio.sleep(0.001)

    async def slow(job: Job) -> None:
        started.append(job.entrypoint)
        await asyncio.sleep(0.02)

    await client.enqueue_many([JobSpec("free")] * 20_000 + [JobSpec("single", priority=1)] * 6)
    worker = Worker(
        backend,
        [Entrypoint("free", quick), Entrypoint("single", slow, concurrency_limit=1)],
        WorkerSettings(concurrency=8, batch_size=4, poll_interval=60.0),
    )

    async def deep() -> bool:
        return worker.state.queue_deep and worker.gates.any_closed

    async def all_ran() -> bool:
        return started.count("single") == 6

    async with running_worker(worker, grace=0, timeout=30):
        await wait_until(deep, timeout=30, what="a deep queue with the limit closed")
        worker._on_event(Event("slot", ("single",)))
        assert worker.gates.any_closed  # the notice was left to the worker that freed the slot: this one, later
        await wait_until(all_ran, timeout=30, what="the limited jobs, one after another")
        assert started.count("free") < 20_000  # each reopened by its predecessor's written outcome, not by a poll


async def test_an_idle_worker_acts_on_a_slot_notice(backend: Backend) -> None:
    async def noop(job: Job) -> None:
        return None

    worker = Worker(backend, [Entrypoint("free", noop), Entrypoint("single", noop, concurrency_limit=1)])
    _, sent = worker.gates.request(0.0)
    worker.gates.claimed(sent, {"single": None}, now=0.0)
    assert not worker.state.queue_deep
    worker._on_event(Event("slot", ("single",)))
    assert not worker.gates.any_closed


async def test_new_jobs_do_not_reopen_a_reached_limit_and_jobs_put_back_do(
    backend: Backend, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker fills the limit and jobs wait: a producer's new jobs leave it closed, and a worker serving
    only that entrypoint sends no claim for them; a job put back (here released by that worker) may have freed a
    slot, and reopens it. The gate's own time is pushed out of reach: only notices open it here."""
    monkeypatch.setattr(limit_gates, "REOPEN_AFTER", 60.0)
    other = await backend.register_worker(WorkerInfo("elsewhere", os.getpid(), ("paired",)))
    await client.enqueue_many([JobSpec("paired")] * 3)
    held = (await backend.claim(other, 2, [PAIRED])).jobs
    assert len(held) == 2
    ran: list[int] = []

    async def record(job: Job) -> None:
        ran.append(job.id)

    counted = CountedClaims()
    entrypoints = [Entrypoint("paired", record, concurrency_limit=2)]
    worker = Worker(backend, entrypoints, WorkerSettings(poll_interval=30.0), metrics=counted)

    async def reported_reached() -> bool:
        return worker.gates.reached == {"paired"} and not worker.state.claiming

    async with running_worker(worker, grace=1, timeout=30):
        await wait_until(reported_reached, timeout=10, what="the limit reported reached")
        claims = counted.claims
        for _ in range(5):
            notices = worker.gates.notices

            async def noticed(notices: int = notices) -> bool:
                return worker.gates.notices > notices and not worker.state.may_have_work

            await client.enqueue("paired")
            await wait_until(noticed, timeout=10, what="the new job's notice acted on")
        assert counted.claims == claims
        assert "paired" in worker.gates.closed
        await backend.record(other, [Unfinished(held[0].id, "release")], ["paired"])

        async def one_ran() -> bool:
            return len(ran) >= 1

        await wait_until(one_ran, timeout=10, what="a job run in the slot the release freed")
